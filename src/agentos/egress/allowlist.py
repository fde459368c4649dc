"""Egress allowlists: which hosts and addresses the kernel may fetch from for one agent.

An entry is one of::

    example.com          that host, any port
    example.com:8443     that host, that port only
    *.example.com        any subdomain at any depth (not example.com itself), any port
    *.example.com:443    the same, that port only
    203.0.113.7          that address (also 2001:db8::1 or [2001:db8::1]), any port
    10.0.0.0/8           any address in that block (also fd00::/8 or [fd00::/8])
    10.1.2.3:5432        an address or block with a port ([::1]:8080, 10.0.0.0/8:443)

Two checks decide a fetch. The URL's host must match an entry: a name matches
name entries only, an IP literal address entries only. Then every address the
name resolves to must be public, or be inside an address entry: an allowed name
that resolves to loopback, link-local, private, unspecified, multicast or
reserved space (including IPv4-mapped, 6to4 and NAT64 spellings of those) is
refused unless the list names that address or a block holding it.

A child's list narrows its parent's: each of its entries must be covered by one
of the parent's (:meth:`Entry.covers`).
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from yarl import URL

from ..errors import InvalidArgument, PermissionDenied

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Bounds what a SPAWN can make the kernel compare (entries x parent entries).
MAX_ENTRIES = 256
_MAX_ENTRY_CHARS = 300

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")
_PORT = re.compile(r"^[0-9]{1,5}\Z")
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: Local-use NAT64 (RFC 8215): translated inside the site, so never public.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")

ENTRY_FORMS = ("a host (example.com), host:port, *.example.com, an IP address, or a CIDR block "
               "(10.0.0.0/8), each optionally with :port")


@dataclass(frozen=True, slots=True)
class Entry:
    """One parsed allow entry; ``text`` is its canonical spelling."""

    text: str
    port: int | None
    #: Host name (lowercase ASCII, no trailing dot); for a wildcard, the suffix after ``*.``.
    name: str | None = None
    wildcard: bool = False
    network: IPNetwork | None = None

    def covers(self, other: Entry) -> bool:
        """Whether everything ``other`` allows, this allows too.

        A port-less entry covers the same host with any port; a name never covers an
        address (nor the reverse), so a child cannot add an address exception its parent
        did not have.
        """
        if self.port is not None and self.port != other.port:
            return False
        if self.network is not None:
            return (other.network is not None and other.network.version == self.network.version
                    and other.network.subnet_of(self.network))  # type: ignore[arg-type]
        name, asked = self.name, other.name
        if name is None or asked is None:
            return False
        if not self.wildcard:
            return not other.wildcard and asked == name
        return (other.wildcard and asked == name) or asked.endswith("." + name)

    def matches_name(self, host: str, port: int) -> bool:
        name = self.name
        if name is None or (self.port is not None and self.port != port):
            return False
        return host.endswith("." + name) if self.wildcard else host == name

    def matches_address(self, address: IPAddress, port: int) -> bool:
        if self.network is None or (self.port is not None and self.port != port):
            return False
        return address.version == self.network.version and address in self.network


def parse_entry(raw: str) -> Entry:
    """An allow entry in canonical form; ValueError saying what is wrong."""
    if len(raw) > _MAX_ENTRY_CHARS:
        raise ValueError(f"{raw[:40]!r}... is longer than {_MAX_ENTRY_CHARS} characters")
    text = raw.strip().lower()
    if "://" in text or "%" in text:
        raise ValueError(f"{raw!r} is not a host: write the host alone, without scheme, path or zone id")
    host, port, bracketed = _split_port(text, raw)
    try:
        network = _unmapped_network(ipaddress.ip_network(host, strict=True))
    except ValueError as exc:
        if bracketed or "/" in host or ":" in host or "has host bits set" in str(exc):
            raise ValueError(f"{raw!r} is not a valid address or block: {exc}") from None
    else:
        return Entry(_address_text(network, port), port, network=network)
    wildcard = host.startswith("*.")
    name = _name(host[2:] if wildcard else host, raw)
    spelled = ("*." if wildcard else "") + name
    return Entry(spelled if port is None else f"{spelled}:{port}", port, name=name, wildcard=wildcard)


class Allowlist:
    """An ordered, duplicate-free list of entries."""

    __slots__ = ("entries",)

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self.entries = tuple({e.text: e for e in entries}.values())

    @classmethod
    def parse(cls, raw: Any, field: str) -> Allowlist:
        """``raw`` (a list of strings) checked entry by entry; InvalidArgument naming ``field``."""
        if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence):
            raise InvalidArgument(f"{field} must be a list of allow entries, got {type(raw).__name__}",
                                  field=field)
        if len(raw) > MAX_ENTRIES:
            raise InvalidArgument(f"{field} has {len(raw)} entries, more than {MAX_ENTRIES}", field=field)
        entries = []
        for i, item in enumerate(raw):
            if not isinstance(item, str):
                raise InvalidArgument(f"{field}[{i}] must be a string, got {type(item).__name__}",
                                      field=f"{field}[{i}]")
            try:
                entries.append(parse_entry(item))
            except ValueError as exc:
                raise InvalidArgument(f"{field}[{i}]: {exc}; write {ENTRY_FORMS}",
                                      field=f"{field}[{i}]") from None
        return cls(entries)

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(e.text for e in self.entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def narrow(self, requested: Any, field: str) -> Allowlist:
        """The child list ``requested``, which each entry of must be covered by this one."""
        child = Allowlist.parse(requested, field)
        for entry in child:
            if not any(held.covers(entry) for held in self.entries):
                raise PermissionDenied(f"{field} entry {entry.text!r} is wider than the parent may reach "
                                       f"({', '.join(self.texts) or 'nothing'})", field=field, entry=entry.text)
        return child

    def permits_host(self, url: URL) -> bool:
        """The name check: the URL's host (a name or an IP literal) and port match an entry."""
        assert url.host is not None and url.port is not None
        address = literal_address(url.host)
        if address is not None:
            return any(e.matches_address(address, url.port) for e in self.entries)
        # raw_host: IDNA-encoded as the entries are, and as it goes on the wire.
        host = (url.raw_host or "").rstrip(".")
        return any(e.matches_name(host, url.port) for e in self.entries)

    def permits_address(self, address: IPAddress, port: int) -> bool:
        """The address check: public, or named by an address entry."""
        address = _unwrapped(address)
        return is_public(address) or any(e.matches_address(address, port) for e in self.entries)


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host spells literally (an embedded IPv4 unwrapped), or None for a name."""
    try:
        return _unwrapped(ipaddress.ip_address(host.rstrip(".")))
    except ValueError:
        return None


def is_public(address: IPAddress) -> bool:
    """Globally routable unicast: nothing on this host, its links or its private networks."""
    if address.version == 6 and address in _LOCAL_NAT64:
        return False
    address = _unwrapped(address)
    return address.is_global and not address.is_multicast and not address.is_reserved


def _unwrapped(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), which is where it leads."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return address


def _unmapped_network(network: IPNetwork) -> IPNetwork:
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        return ipaddress.IPv4Network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
    return network


def _split_port(text: str, raw: str) -> tuple[str, int | None, bool]:
    """(host, port, whether the host was bracketed); only a bracketed IPv6 literal takes a port."""
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{raw!r} has an unclosed or misplaced ']'")
        return inside, _port(rest[1:], raw) if rest else None, True
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, _port(port, raw), False
    return text, None, False


def _port(text: str, raw: str) -> int:
    if not _PORT.match(text) or not 0 < int(text) < 65536:
        raise ValueError(f"{raw!r} has port {text!r}, not a number from 1 to 65535")
    return int(text)


def _name(host: str, raw: str) -> str:
    host = host[:-1] if host.endswith(".") else host
    if not host.isascii():
        try:
            host = URL.build(scheme="http", host=host).raw_host or ""
        except ValueError as exc:
            raise ValueError(f"{raw!r} is not a valid host name: {exc}") from None
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{raw!r} is not a valid host name (labels of letters, digits, '-' and '_', "
                         "'*.' only as a whole first label)")
    if labels[-1].isdigit():
        # 127.1, 2130706433, 10.0.0.300: address spellings, not names; a top-level domain has a letter.
        raise ValueError(f"{raw!r} is neither a valid address nor a host name")
    return host


def _address_text(network: IPNetwork, port: int | None) -> str:
    full = network.prefixlen == network.max_prefixlen
    text = str(network.network_address) if full else str(network)
    if port is None:
        return text
    return f"[{text}]:{port}" if network.version == 6 else f"{text}:{port}"
