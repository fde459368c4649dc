"""``agentos mcp --http``/``--unix``: Streamable HTTP on a loopback port or a Unix socket, never an open door.

Every request must carry ``Host`` naming this listener and, if it has an ``Origin``, this listener's
own origin (the MCP spec's Streamable HTTP security guidance: validate ``Origin`` against DNS
rebinding, bind to localhost), and then a bearer token this server knows. Each token is a principal
of its own: sessions are bound to the token that opened them, and stateless (2026-07-28) requests
of one token share that token's sandboxes and no one else's.
"""
from __future__ import annotations

import contextlib
import hmac
import ipaddress
import os
import secrets
import signal
import socket
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.transport_security import TransportSecuritySettings
from starlette.authentication import AuthCredentials
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .server import SandboxServer

PATH = "/mcp"
#: The environment variable holding a token (one principal), when no --token-file is given.
TOKEN_ENV = "AGENTOS_MCP_TOKEN"
MIN_TOKEN = 16


@dataclass(frozen=True)
class Listen:
    """Where to listen: a loopback ``host`` and ``port``, or a Unix socket ``path``."""

    host: str | None = None
    port: int = 0
    path: str | None = None


def parse_http(text: str) -> Listen:
    """``HOST:PORT`` on a loopback address (``localhost`` is 127.0.0.1): a ValueError naming ``--http`` otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--http: expected HOST:PORT (e.g. 127.0.0.1:8765), got {text!r}")
    host = host.removeprefix("[").removesuffix("]")
    try:
        address = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
    except ValueError:
        raise ValueError(f"--http: {host!r} is not an IP address (a loopback one: 127.0.0.1 or ::1)") from None
    if not address.is_loopback:
        # Its tools run code as the user: the server is never offered to the network.
        raise ValueError(f"--http: {host} is not a loopback address; agentos mcp listens on 127.0.0.0/8 or ::1 only")
    return Listen(host=str(address), port=int(port))


def load_tokens(token_file: str | None) -> tuple[dict[str, str], bool]:
    """``{token: principal}`` from ``token_file`` (one per line, ``#`` comments), else ``$AGENTOS_MCP_TOKEN``,
    else one made now; and whether it was made (then it is printed, and nowhere else known)."""
    if token_file is not None:
        try:
            lines = Path(token_file).read_text().splitlines()
        except OSError as exc:
            raise ValueError(f"--token-file: {exc}") from None
        found = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not found:
            raise ValueError(f"--token-file: {token_file} holds no token")
    elif os.environ.get(TOKEN_ENV):
        found = [os.environ[TOKEN_ENV]]
    else:
        return {secrets.token_urlsafe(32): "token-1"}, True
    for number, token in enumerate(found, 1):
        if len(token) < MIN_TOKEN or not token.isascii() or not token.isprintable() or " " in token:
            where = "--token-file" if token_file else TOKEN_ENV
            raise ValueError(f"{where}: token {number} must be at least {MIN_TOKEN} printable ASCII "
                             "characters without spaces")
    return {token: f"token-{number}" for number, token in enumerate(found, 1)}, False


class Guard:
    """The listener's front door: Host and Origin first, then the bearer token."""

    def __init__(self, app: ASGIApp, tokens: Mapping[str, str], hosts: frozenset[str],
                 origins: frozenset[str]) -> None:
        self.app = app
        self.tokens = dict(tokens)
        self.hosts = hosts
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if headers.get("host") not in self.hosts:
            await PlainTextResponse("Invalid Host header", 421)(scope, receive, send)
            return
        origin = headers.get("origin")
        if origin is not None and origin not in self.origins:
            # A browser page of another origin (DNS rebinding included) gets nothing, token or not.
            await PlainTextResponse("Invalid Origin header", 403)(scope, receive, send)
            return
        principal = self.principal(headers.get("authorization", ""))
        if principal is None:
            await PlainTextResponse("a bearer token is required (Authorization: Bearer TOKEN)", 401,
                                    headers={"WWW-Authenticate": 'Bearer realm="agentos mcp"'})(scope, receive, send)
            return
        # The SDK binds each HTTP session to the principal that opened it, and the server reads it.
        scope["user"] = AuthenticatedUser(AccessToken(token="", client_id=principal, scopes=[]))
        scope["auth"] = AuthCredentials([])
        await self.app(scope, receive, send)

    def principal(self, authorization: str) -> str | None:
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return None
        found = None
        for token, principal in self.tokens.items():
            # Every token compared, in constant time each: the answer's timing tells nothing.
            if hmac.compare_digest(token.encode(), given.strip().encode()):
                found = principal
        return found


@contextlib.contextmanager
def bound(listen: Listen) -> Iterator[socket.socket]:
    """The listening socket; a Unix socket is made 0600 (only this uid may connect) and removed after."""
    if listen.path is None:
        assert listen.host is not None
        family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen.host, listen.port))
    else:
        path = Path(listen.path)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise ValueError(f"--unix: {path} exists and is not a socket")
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
    try:
        sock.listen(128)
        sock.setblocking(False)
        yield sock
    finally:
        sock.close()
        if listen.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(listen.path)


def allowed(listen: Listen, sock: socket.socket) -> tuple[str, frozenset[str], frozenset[str]]:
    """The URL clients use, and the Host and Origin values a request may carry."""
    if listen.path is not None:
        # No browser reaches a Unix socket; clients name it as localhost.
        return f"http://localhost{PATH}", frozenset({"localhost"}), frozenset()
    port = sock.getsockname()[1]
    host = f"[{listen.host}]" if ":" in (listen.host or "") else str(listen.host)
    names = {f"{host}:{port}", f"localhost:{port}"}
    return f"http://{host}:{port}{PATH}", frozenset(names), frozenset(f"http://{name}" for name in names)


async def serve(server: SandboxServer, listen: Listen, tokens: Mapping[str, str],
                ready: Callable[[str], None]) -> None:
    """Serve Streamable HTTP until SIGINT or SIGTERM; sessions idle past the policy's timeout end."""
    with bound(listen) as sock:
        url, hosts, origins = allowed(listen, sock)
        security = TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=sorted(hosts),
                                             allowed_origins=sorted(origins))
        app = server.mcp.streamable_http_app(streamable_http_path=PATH, transport_security=security,
                                             session_idle_timeout=server.policy.idle_timeout)
        config = uvicorn.Config(Guard(app, tokens, hosts, origins), log_level="warning", access_log=False,
                                lifespan="on", timeout_graceful_shutdown=5)
        http = uvicorn.Server(config)
        # uvicorn shuts down on SIGINT/SIGTERM, then raises the signal again under the handler it
        # found; a handler that does nothing lets this process go on to kill its sessions' sandboxes.
        previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            ready(url)
            await http.serve(sockets=[sock])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _stopped(signum: int, frame: object) -> None:
    """The signal uvicorn raises again once it has stopped serving: already handled."""

