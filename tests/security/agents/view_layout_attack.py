"""Attack the view's layout (docs/sandboxes.md, "Superblocks and memory cgroups per sandbox"):
/dev, /tmp, /dev/shm and masks are directories of the view's one root tmpfs.

Create in /dev, the root and a masked directory; mknod; make /dev, / or a mask writable again
(remount, mount_setattr, a user namespace of its own first); raise the tmpfs's size by a remount
or through fspick;
read the mask (the root's /proc directory, bound); leave its memory cgroup (cgroup.procs).
Then put ``cap_mib`` / 2 in /dev/shm and up to ``cap_mib`` more in /tmp; leave a marker in each.

argv[1]: JSON {"mask": a masked directory, "cap_mib": a cap on the filling, "marker": a name,
"hold": stay up after the report}.
Prints {"outcomes": {attempt: "ok" | errno name}, "mask": [its entries], "others": {dir: [its files
before this agent's]}, "tmp_mib", "shm_mib", "refused": errno name | None, "statfs_mib"}.
"""
import ctypes
import errno
import json
import os
import signal
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit, outcome

task = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
MOUNT_ATTR_RDONLY, AT_RECURSIVE = 1, 0x8000
NR_MOUNT_SETATTR, NR_FSPICK, NR_FSCONFIG = 442, 433, 431  # the same on x86_64 and aarch64
FSCONFIG_SET_STRING, FSCONFIG_CMD_RECONFIGURE = 1, 7


def checked(result):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def mount(source, target, fstype, flags, data=None):
    return lambda: checked(libc.mount(source, target, fstype, ctypes.c_ulong(flags), data))


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def writable_again(path, flags=0):
    """mount_setattr clearing the read-only attribute of ``path``'s mount."""
    attr = MountAttr(0, MOUNT_ATTR_RDONLY, 0, 0)
    return lambda: checked(libc.syscall(NR_MOUNT_SETATTR, -100, path, flags, ctypes.byref(attr),
                                        ctypes.sizeof(attr)))


def reconfigure(path, key, value):
    """The new mount API's way to remount: fspick the superblock, set an option, reconfigure."""
    def attempt():
        fd = libc.syscall(NR_FSPICK, -100, path, 0)
        if fd < 0:
            checked(fd)
        try:
            checked(libc.syscall(NR_FSCONFIG, fd, FSCONFIG_SET_STRING, key, value, 0))
            checked(libc.syscall(NR_FSCONFIG, fd, FSCONFIG_CMD_RECONFIGURE, None, None, 0))
        finally:
            os.close(fd)
    return attempt


def create(path):
    def attempt():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(path)
    return attempt


def mknod(path, mode, device=0):
    def attempt():
        os.mknod(path, mode | 0o600, device)
        os.unlink(path)
    return attempt


def in_own_namespace_then(fn):
    """unshare a user and mount namespace (as an unprivileged process would), then ``fn``."""
    def attempt():
        checked(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS))
        fn()
    return attempt


def leave_memory_cgroup():
    """Move itself into its parent memory cgroup (above its own limit)."""
    for line in open("/proc/self/cgroup").read().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(",") or controllers == "":
            base = "/sys/fs/cgroup" + ("/memory" if controllers else "")
            with open(f"{base}{os.path.dirname(path)}/cgroup.procs", "w") as f:
                f.write(str(os.getpid()))
            return
    raise OSError(errno.ENOENT, "no memory cgroup")


mask = task["mask"]
outcomes = {
    "create in /dev": outcome(create("/dev/x")),
    "mkdir in /dev": outcome(lambda: os.mkdir("/dev/x")),
    "symlink in /dev": outcome(lambda: os.symlink("/tmp", "/dev/x")),
    "unlink /dev/null": outcome(lambda: os.unlink("/dev/null")),
    "rename /dev/shm": outcome(lambda: os.rename("/dev/shm", "/dev/shm2")),
    "create in /": outcome(create("/x")),
    "create in a mask": outcome(create(f"{mask}/x")),
    "mknod a char device in /tmp": outcome(mknod("/tmp/mem", stat.S_IFCHR, os.makedev(1, 1))),
    "mknod a char device in /dev/shm": outcome(mknod("/dev/shm/mem", stat.S_IFCHR, os.makedev(1, 1))),
    "hard link /tmp into /dev/shm": outcome(lambda: os.link("/tmp", "/dev/shm/t")),
    "remount / rw": outcome(mount(None, b"/", None, MS_REMOUNT | MS_BIND)),
    "remount /dev rw": outcome(mount(None, b"/dev", None, MS_REMOUNT | MS_BIND)),
    "remount the mask rw": outcome(mount(None, mask.encode(), None, MS_REMOUNT | MS_BIND)),
    "remount /tmp's tmpfs bigger": outcome(mount(None, b"/tmp", None, MS_REMOUNT, b"size=64g")),
    "mount_setattr / rw": outcome(writable_again(b"/", AT_RECURSIVE)),
    "mount_setattr /dev rw": outcome(writable_again(b"/dev")),
    "mount a tmpfs on /dev": outcome(mount(b"tmpfs", b"/dev", b"tmpfs", 0)),
    "fspick /tmp's tmpfs bigger": outcome(reconfigure(b"/tmp", b"size", b"64g")),
    "userns then remount / rw": outcome(in_own_namespace_then(mount(None, b"/", None, MS_REMOUNT | MS_BIND))),
    "leave its memory cgroup": outcome(leave_memory_cgroup),
}
shown: list[str] | str
try:
    shown = sorted(os.listdir(mask))
except OSError as exc:  # a mask the kernel could not read itself is not masked: it stays unreadable
    shown = errno.errorcode.get(exc.errno or 0, str(exc.errno))
# Mount points, and the directories on the way to one (this script's bound directory, when the
# checkout is under /tmp), are its own view's, not another agent's files.
with open("/proc/self/mountinfo") as mountinfo:
    mounts = [line.split()[4] for line in mountinfo]
others = {}
for directory in ("/tmp", "/dev/shm"):
    others[directory] = sorted(name for name in os.listdir(directory)
                               if not any(m == f"{directory}/{name}" or m.startswith(f"{directory}/{name}/")
                                          for m in mounts))
    with open(f"{directory}/{task['marker']}", "w") as marker:
        marker.write("mine")
info = os.statvfs("/tmp")
report: dict[str, object] = {"outcomes": outcomes, "mask": shown, "others": others, "refused": None,
          "statfs_mib": info.f_blocks * info.f_frsize >> 20}
chunk, written = b"\xa5" * (1 << 20), {"/dev/shm": 0, "/tmp": 0}
# Half the cap in /dev/shm, then /tmp until refused: each alone may hold the whole limit.
for directory, cap in (("/dev/shm", task["cap_mib"] << 19), ("/tmp", task["cap_mib"] << 20)):
    with open(f"{directory}/fill", "wb", buffering=0) as f:
        while written[directory] < cap:
            try:
                written[directory] += f.write(chunk)
            except OSError as exc:
                report["refused"] = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                break
report["tmp_mib"], report["shm_mib"] = written["/tmp"] >> 20, written["/dev/shm"] >> 20
emit(**report)
if task.get("hold"):
    signal.pause()  # kept up (with its files) until it is killed
