"""Which URLs the kernel fetches, and how much and how long it will fetch."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from yarl import URL

from ..errors import InvalidArgument, PermissionDenied
from ..units import parse_bytes, parse_duration
from .allowlist import Allowlist

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class EgressPolicy:
    """The kernel's ``egress`` section: its allowlist (what outside clients reach, and the
    widest list any agent can get) and the size and time ceilings of every fetch."""

    allow: Allowlist = field(default_factory=Allowlist)
    max_response_bytes: int = 10 * 1024 * 1024
    timeout_s: float = 30.0
    max_redirects: int = 5

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> EgressPolicy:
        defaults = cls()
        try:
            allow = Allowlist.parse(section.get("allow", []), "egress.allow")
        except InvalidArgument as exc:
            raise ValueError(exc.message) from None
        redirects = section.get("max_redirects", defaults.max_redirects)
        if isinstance(redirects, bool) or not isinstance(redirects, int) or redirects < 0:
            raise ValueError(f"egress.max_redirects must be a non-negative integer, got {redirects!r}")
        return cls(allow=allow,
                   max_response_bytes=parse_bytes(section.get("max_bytes",
                                                              defaults.max_response_bytes),
                                                  "egress.max_bytes"),
                   timeout_s=parse_duration(section.get("timeout", defaults.timeout_s),
                                            "egress.timeout"),
                   max_redirects=redirects)

    def limits(self, args: Mapping[str, Any]) -> tuple[float, int]:
        """The call's (timeout, max bytes): what it asked for, capped by the policy."""
        # null means "the kernel's", as an absent field does.
        timeout = _given(args.get("timeout"), self.timeout_s)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise InvalidArgument(f"timeout must be a positive number of seconds, got {timeout!r}")
        max_bytes = _given(args.get("max_bytes"), self.max_response_bytes)
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise InvalidArgument(f"max_bytes must be a positive integer, got {max_bytes!r}")
        return min(float(timeout), self.timeout_s), min(max_bytes, self.max_response_bytes)


def _given(value: Any, default: Any) -> Any:
    return default if value is None else value


def check_url(raw: Any, allowlist: Allowlist) -> URL:
    """The parsed URL if it is http(s) to a host ``allowlist`` names; PermissionDenied otherwise.

    This is the name check; the addresses a name resolves to are checked as the
    connection is made (:class:`.resolver.GuardedResolver`).
    """
    if not isinstance(raw, str) or not raw:
        raise InvalidArgument(f"url must be a non-empty string, got {raw!r}")
    try:
        url = parse_url(raw)
        # Read here: yarl decodes these lazily, and a malformed IDNA label fails on first read.
        port, host, _ = url.port, url.host, url.raw_host
    except ValueError as exc:
        raise InvalidArgument(f"url {raw!r} is not valid: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise InvalidArgument(f"only http and https URLs can be fetched, not {url.scheme!r}")
    if not host or port is None:
        raise InvalidArgument(f"url {raw!r} has no host")
    if url.user is not None or url.password is not None:
        raise InvalidArgument("credentials in the URL are not allowed; send a header")
    if not allowlist.permits_host(url):
        raise PermissionDenied(f"{url.host} is not an allowed egress domain", host=url.host)
    return url


def parse_url(raw: str) -> URL:
    """``URL(raw)``, with every way yarl fails on malformed input as ValueError."""
    try:
        return URL(raw)
    except IndexError:
        # yarl 1.x indexes an empty host after userinfo ("http://[]@/") without checking.
        raise ValueError("malformed host") from None
