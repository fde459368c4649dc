"""Write or read past the agent's view, by every trick: direct writes, symlinks, hard links,
file handles, device nodes, /proc and /sys, /proc/1/root, host secrets.

argv[1]: JSON {"outside": a host dir that is not in the view, "work": the agent's writable dir}.
Prints {"outcomes": {attempt: "ok" | errno name}}.
"""
import ctypes
import json
import os
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit, outcome

paths = json.loads(sys.argv[1])
work = paths["work"]
libc = ctypes.CDLL(None, use_errno=True)


def create(path):
    def attempt():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(path)
    return attempt


def open_for_writing(path):
    def attempt():
        os.close(os.open(path, os.O_WRONLY))
    return attempt


def read(path):
    def attempt():
        with open(path, "rb") as f:
            f.read(1)
    return attempt


def write_through_symlink():
    link = os.path.join(work, "to-passwd")
    os.symlink("/etc/passwd", link)
    try:
        open_for_writing(link)()
    finally:
        os.unlink(link)


def follow_symlink_outside():
    link = os.path.join(work, "to-outside")
    os.symlink(paths["outside"], link)
    try:
        os.listdir(link)
    finally:
        os.unlink(link)


def hard_link_in():
    target = os.path.join(work, "passwd-link")
    os.link("/etc/passwd", target)
    os.unlink(target)


def by_handle():
    """name_to_handle_at then open_by_handle_at: the classic way past a bind mount (Shocker)."""
    handle = ctypes.create_string_buffer(8 + 128)
    ctypes.c_uint.from_buffer(handle).value = 128
    mount_id = ctypes.c_int()
    if libc.name_to_handle_at(-100, b"/etc/passwd", handle, ctypes.byref(mount_id), 0) != 0:
        raise OSError(ctypes.get_errno(), "name_to_handle_at")
    fd = libc.open_by_handle_at(os.open("/", os.O_RDONLY), handle, 0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "open_by_handle_at")
    os.close(fd)


def mknod_in_work(kind, device):
    def attempt():
        path = os.path.join(work, "node")
        os.mknod(path, 0o600 | kind, device)
        os.unlink(path)
    return attempt


def escape_via_proc_root():
    # pid 1 is the agent itself: its root is the agent's root, never the host's.
    os.listdir(os.path.join("/proc/1/root", paths["outside"].lstrip("/")))


def sys_write():
    open_for_writing("/sys/kernel/uevent_helper")()


ATTEMPTS = {
    "create in /usr": create("/usr/escape-probe"),
    "create in /etc": create("/etc/escape-probe"),
    "create in /": create("/escape-probe"),
    "create in a host dir outside the view": create(os.path.join(paths["outside"], "escape-probe")),
    "write /etc/passwd through a symlink": write_through_symlink,
    "follow a symlink to a host dir outside the view": follow_symlink_outside,
    "hard link /etc/passwd into the work dir": hard_link_in,
    "open_by_handle_at": by_handle,
    "mknod a block device": mknod_in_work(stat.S_IFBLK, os.makedev(8, 0)),
    "mknod /dev/mem": mknod_in_work(stat.S_IFCHR, os.makedev(1, 1)),
    "write /proc/sys": open_for_writing("/proc/sys/kernel/core_pattern"),
    "write /proc/sysrq-trigger": open_for_writing("/proc/sysrq-trigger"),
    "host root through /proc/1/root": escape_via_proc_root,
    "write /sys": sys_write,
    "read /etc/shadow": read("/etc/shadow"),
}
emit(agent="fs_attack", outcomes={name: outcome(fn) for name, fn in ATTEMPTS.items()})
