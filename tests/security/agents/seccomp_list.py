"""Call every syscall of the sandbox's deny list, and the argument-filtered ones.

Arguments are all -1 (bad fd, bad pointer, bad flags): a call that the filter lets through
fails harmlessly in the kernel with some other errno. Prints {"outcomes": {name: errno name}}.
"""
import ctypes
import errno
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

from agentos.sandbox._linux import linux
from agentos.sandbox.seccomp import DENIED

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
BAD = [ctypes.c_long(-1)] * 6


def call(number, *args):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *args)
    if result == 0 and number == linux.SYSCALL_NUMBERS["clone"]:
        os._exit(0)  # a child escaped the filter: it must not run the rest
    return "ok" if result >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


def vsock():
    try:
        socket.socket(40, socket.SOCK_STREAM).close()  # AF_VSOCK
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


numbers = linux.SYSCALL_NUMBERS
outcomes = {name: call(numbers[name], *BAD) for name in DENIED if name in numbers}
null = os.open("/dev/null", os.O_RDONLY)
outcomes["ioctl TIOCSTI"] = call(numbers["ioctl"], ctypes.c_long(null), ctypes.c_long(linux.TIOCSTI),
                                 ctypes.c_char_p(b"x"))
outcomes["ioctl TIOCLINUX"] = call(numbers["ioctl"], ctypes.c_long(null), ctypes.c_long(linux.TIOCLINUX),
                                   ctypes.c_char_p(b"x"))
outcomes["clone with a new user namespace"] = call(numbers["clone"], ctypes.c_long(linux.CLONE_NEWUSER | 17),
                                                   *BAD[:4])
outcomes["clone3"] = call(numbers["clone3"], *BAD)
outcomes["socket AF_VSOCK"] = vsock()
emit(agent="seccomp_list", outcomes=outcomes, denied=[name for name in DENIED if name in numbers])
