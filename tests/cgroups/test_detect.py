"""Layout detection from mount tables: v2, v1, hybrid and none."""
from __future__ import annotations

from pathlib import Path

from agentos.cgroups import NoDriver, V1Driver, V2Driver, detect, open_driver

V1_LINES = """\
32 31 0:29 / {root}/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / {root}/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / {root}/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / {root}/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / {root}/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
"""
OTHER = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"


def write_mountinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mountinfo"
    path.write_text(OTHER + text)
    return path


def fake_v2_root(tmp_path: Path, controllers: str) -> Path:
    root = tmp_path / "unified"
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers + "\n")
    return root


def test_pure_v2(tmp_path: Path) -> None:
    root = fake_v2_root(tmp_path, "cpuset cpu io memory hugetlb pids rdma misc")
    info = write_mountinfo(tmp_path, f"30 22 0:26 / {root} rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n")
    layout = detect(info)
    assert layout.kind == "v2"
    assert layout.v2_mount == root
    assert {"memory", "pids", "cpu"} <= layout.v2_controllers
    assert layout.driver_name() == "v2"
    assert isinstance(open_driver(layout, uid=0), V2Driver)


def test_pure_v1_with_comounted_cpu(tmp_path: Path) -> None:
    layout = detect(write_mountinfo(tmp_path, V1_LINES.format(root="/sys/fs/cgroup")))
    assert layout.kind == "v1"
    assert layout.v1_mounts["cpu"] == layout.v1_mounts["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert layout.v1_mounts["memory"] == Path("/sys/fs/cgroup/memory")
    assert "systemd" not in layout.v1_mounts  # a named hierarchy, not a controller
    driver = open_driver(layout, uid=0)
    assert isinstance(driver, V1Driver)
    assert driver.enforceable == {"memory", "pids", "cpu"}
    # cpu and cpuacct share one directory: it is made, joined and removed once.
    assert len(driver.roots) == 4


def test_hybrid_prefers_the_hierarchy_holding_the_controllers(tmp_path: Path) -> None:
    # This project's CI machine: v1 controllers, an empty v2 at /sys/fs/cgroup/unified.
    root = fake_v2_root(tmp_path, "")
    text = V1_LINES.format(root="/sys/fs/cgroup") + \
        f"41 31 0:38 / {root} rw,relatime - cgroup2 cgroup2 rw\n"
    layout = detect(write_mountinfo(tmp_path, text))
    assert layout.kind == "hybrid"
    assert layout.v2_controllers == frozenset()
    assert layout.driver_name() == "v1"


def test_hybrid_with_controllers_on_v2(tmp_path: Path) -> None:
    root = fake_v2_root(tmp_path, "memory pids cpu")
    text = "37 31 0:34 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n" + \
        f"41 31 0:38 / {root} rw,relatime - cgroup2 cgroup2 rw\n"
    layout = detect(write_mountinfo(tmp_path, text))
    assert layout.kind == "hybrid"
    assert layout.driver_name() == "v2"


def test_v2_without_controllers_still_beats_nothing(tmp_path: Path) -> None:
    root = fake_v2_root(tmp_path, "")
    layout = detect(write_mountinfo(tmp_path, f"41 31 0:38 / {root} rw - cgroup2 cgroup2 rw\n"))
    driver = open_driver(layout, uid=0)
    assert isinstance(driver, V2Driver)
    assert driver.enforceable == frozenset()


def test_none(tmp_path: Path) -> None:
    layout = detect(write_mountinfo(tmp_path, ""))
    assert layout.kind == "none"
    driver = open_driver(layout, uid=0)
    assert isinstance(driver, NoDriver)
    assert driver.enforceable == frozenset()
    assert detect(tmp_path / "missing").kind == "none"


def test_escaped_mount_point(tmp_path: Path) -> None:
    root = tmp_path / "with space"
    root.mkdir()
    (root / "cgroup.controllers").write_text("memory\n")
    escaped = str(root).replace(" ", "\\040")
    layout = detect(write_mountinfo(tmp_path, f"41 31 0:38 / {escaped} rw - cgroup2 cgroup2 rw\n"))
    assert layout.v2_mount == root
    assert layout.v2_controllers == {"memory"}


def test_this_host_matches_its_mount_table() -> None:
    layout = detect()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert (layout.v2_mount is not None) == (" - cgroup2 " in mounts)
    for controller, path in layout.v1_mounts.items():
        line = next(m for m in mounts.splitlines() if f" {path} " in m and " - cgroup " in m)
        assert controller in line.split()[-1].split(",")
