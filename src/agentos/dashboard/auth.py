"""Who may load the page: a loopback listener, a random token, a cookie, CSRF checks.

The kernel decides what the dashboard's *user* may do; this module decides who that user is
on the HTTP side: only a browser that was given the printed URL. Another local user can
reach a loopback port, so the port alone proves nothing; a web page in the same browser can
send requests to it, hence the SameSite cookie, the CSRF token on every action, the Origin
and Host checks (a DNS-rebinding page arrives with a foreign Host).
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass

#: The cookie a visit with the token sets.
COOKIE = "agentos_dashboard"
#: The form field and header an action carries its CSRF token in.
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @property
    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host


def parse_listen(text: str) -> Listen:
    """``HOST:PORT`` (``[::1]:PORT``; ``localhost`` is 127.0.0.1) on a loopback address only:
    a ValueError naming ``--listen`` otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--listen: expected HOST:PORT, got {text!r}")
    host = host.removeprefix("[").removesuffix("]")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"--listen: {host!r} is not an IP address (a loopback one: 127.0.0.1 or ::1)") from None
    if not address.is_loopback:
        # The page acts with the user's kernel permissions: it is never offered to the network.
        raise ValueError(f"--listen: {host} is not a loopback address; the dashboard listens on "
                         "127.0.0.0/8 or ::1 only")
    return Listen(str(address), int(port_text))


class Guard:
    """The token and what is derived from it."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(32)
        # Derived, not stored: a page can show it, and knowing it gives no way back to the token.
        self.csrf = hmac.new(self.token.encode(), b"csrf", hashlib.sha256).hexdigest()
        self.hosts: frozenset[str] = frozenset()

    def bind(self, listen: Listen, port: int) -> None:
        """The Host headers a request may carry once listening on ``port``."""
        # Every loopback listener is also reached as localhost (parse_listen allows no other kind).
        names = {listen.url_host, "localhost"}
        self.hosts = frozenset(f"{name}:{port}" for name in names)

    def valid_token(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self.token.encode())

    def valid_csrf(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self.csrf.encode())

    def valid_host(self, host: str | None) -> bool:
        return host is not None and host.lower() in self.hosts

    def same_origin(self, origin: str | None) -> bool:
        """An ``Origin`` header, when the browser sent one, names this page's own origin."""
        return origin is None or origin.removeprefix("http://").lower() in self.hosts
