"""Which URLs the kernel fetches for agents, and how much and how long it will fetch."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from yarl import URL

from ..errors import InvalidArgument, PermissionDenied
from ..units import parse_bytes, parse_duration

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class EgressPolicy:
    """An allowlist of hosts plus size and time ceilings.

    Allow entries: ``example.com`` (that host, any port), ``example.com:8443``
    (that port only), ``*.example.com`` (any subdomain, not the apex). IP
    literals are hosts like any other: list ``127.0.0.1`` to allow it.
    """

    allow: tuple[str, ...] = ()
    max_response_bytes: int = 10 * 1024 * 1024
    timeout_s: float = 30.0
    max_redirects: int = 5

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> EgressPolicy:
        defaults = cls()
        allow = section.get("allow", [])
        if isinstance(allow, str) or not all(isinstance(a, str) and a for a in allow):
            raise ValueError(f"egress.allow must be a list of host names, got {allow!r}")
        redirects = section.get("max_redirects", defaults.max_redirects)
        if isinstance(redirects, bool) or not isinstance(redirects, int) or redirects < 0:
            raise ValueError(f"egress.max_redirects must be a non-negative integer, got {redirects!r}")
        return cls(allow=tuple(a.lower().rstrip(".") for a in allow),
                   max_response_bytes=parse_bytes(section.get("max_bytes",
                                                              defaults.max_response_bytes),
                                                  "egress.max_bytes"),
                   timeout_s=parse_duration(section.get("timeout", defaults.timeout_s),
                                            "egress.timeout"),
                   max_redirects=redirects)

    def check_url(self, raw: Any) -> URL:
        """The parsed URL if it is http(s) to an allowed host; PermissionDenied otherwise."""
        if not isinstance(raw, str) or not raw:
            raise InvalidArgument(f"url must be a non-empty string, got {raw!r}")
        try:
            url = URL(raw)
        except ValueError as exc:
            raise InvalidArgument(f"url {raw!r} is not valid: {exc}") from None
        if url.scheme not in ("http", "https"):
            raise InvalidArgument(f"only http and https URLs can be fetched, not {url.scheme!r}")
        if not url.host:
            raise InvalidArgument(f"url {raw!r} has no host")
        if url.user is not None or url.password is not None:
            raise InvalidArgument("credentials in the URL are not allowed; send a header")
        if not self.allows(url.host, url.port):
            raise PermissionDenied(f"{url.host} is not an allowed egress domain", host=url.host)
        return url

    def allows(self, host: str, port: int | None) -> bool:
        host = host.lower().rstrip(".")
        for entry in self.allow:
            name, _, entry_port = entry.rpartition(":") if _has_port(entry) else (entry, "", "")
            if entry_port and str(port) != entry_port:
                continue
            if name.startswith("*."):
                if host.endswith(name[1:]):
                    return True
            elif host == name:
                return True
        return False

    def limits(self, args: Mapping[str, Any]) -> tuple[float, int]:
        """The call's (timeout, max bytes): what it asked for, capped by the policy."""
        timeout = args.get("timeout", self.timeout_s)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise InvalidArgument(f"timeout must be a positive number of seconds, got {timeout!r}")
        max_bytes = args.get("max_bytes", self.max_response_bytes)
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise InvalidArgument(f"max_bytes must be a positive integer, got {max_bytes!r}")
        return min(float(timeout), self.timeout_s), min(max_bytes, self.max_response_bytes)


def _has_port(entry: str) -> bool:
    # An IPv6 literal is bracketed, so a trailing ":digits" is always a port.
    head, sep, tail = entry.rpartition(":")
    return bool(sep) and tail.isdigit() and not head.endswith(":")
