"""Reach the host's network from a sandbox without network: every way must fail.

argv[1]: JSON {"tcp": port, "udp": port, "abstract": name} of listeners the test opened on the
host. Prints {"outcomes": {attempt: "ok" | errno name | "gaierror N"}, "interfaces": [...]}.
"""
import errno
import json
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

host = json.loads(sys.argv[1])


def outcome(fn):
    try:
        fn()
        return "ok"
    except socket.gaierror as exc:
        return f"gaierror {exc.errno}"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc))


def tcp():
    with socket.create_connection(("127.0.0.1", host["tcp"]), timeout=5):
        pass


def udp():
    # Sending succeeds on the agent's own loopback; the test checks the host listener got nothing.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"escaped", ("127.0.0.1", host["udp"]))


def abstract():
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect("\0" + host["abstract"])


def raw(family, kind, proto):
    def attempt():
        socket.socket(family, kind, proto).close()
    return attempt


def netlink_new_link():
    """RTM_NEWLINK for a dummy interface: needs CAP_NET_ADMIN over the host's network."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        name = b"aosescape0\0"
        kind = b"dummy\0"
        def attr(kind_, data):
            body = struct.pack("HH", len(data) + 4, kind_) + data
            return body + b"\0" * (-len(body) % 4)
        attrs = attr(3, name) + attr(18, attr(1, kind))  # IFLA_IFNAME, IFLA_LINKINFO{IFLA_INFO_KIND}
        ifinfo = struct.pack("BxHiII", 0, 0, 0, 0, 0)
        flags = 0x1 | 0x4 | 0x400 | 0x200  # REQUEST | ACK | CREATE | EXCL
        msg = struct.pack("IHHII", 16 + len(ifinfo) + len(attrs), 16, flags, 1, 0) + ifinfo + attrs
        s.send(msg)
        reply = s.recv(65536)
        code = struct.unpack_from("i", reply, 16)[0]
        if code:
            raise OSError(-code, os.strerror(-code))


def dns():
    socket.getaddrinfo("example.com", 443)


def resolver():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.connect(("1.1.1.1", 53))
        s.send(b"\0")
        s.recv(512)


ATTEMPTS = {
    "tcp to the host's loopback": tcp,
    "udp to the host's loopback": udp,
    "abstract unix socket of the host": abstract,
    "dns lookup": dns,
    "udp to a public resolver": resolver,
    "raw ip socket": raw(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    "packet socket": raw(socket.AF_PACKET, socket.SOCK_RAW, 0),
    "netlink: create an interface": netlink_new_link,
}
emit(agent="net_attack", outcomes={name: outcome(fn) for name, fn in ATTEMPTS.items()},
     interfaces=[name for _, name in socket.if_nameindex()])
