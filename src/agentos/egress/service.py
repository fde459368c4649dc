"""The egress subsystem: the HTTP syscall, fetched by the kernel through aiohttp."""
from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from ..errors import InvalidArgument, Timeout, TooLarge, Unavailable
from ..kernel.identity import Identity
from ..kernel.syscalls import Call, Handler
from ..protocol import Op
from .allowlist import Allowlist
from .policy import METHODS, EgressPolicy, check_url, parse_url
from .resolver import GuardedResolver

if TYPE_CHECKING:
    from ..kernel.daemon import Kernel

#: Request headers an agent may not set: the kernel decides routing and framing.
_FORBIDDEN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection",
                                "proxy-authorization", "upgrade"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_NOTHING = Allowlist()
#: RFC 9110 token characters: what a header name may be made of.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
#: Control characters other than tab, which a header value may not hold.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class EgressService:
    """Fetches URLs for callers that hold ``http``, each within its own allowlist.

    Outside clients get the kernel's ``egress.allow``. An agent gets the list its
    spawn assigned (:meth:`child_allow`, then :meth:`assign`), never wider than its
    parent's; an agent with none assigned reaches nothing.
    """

    name = "egress"

    def __init__(self, kernel: Kernel, resolver: AbstractResolver | None = None) -> None:
        self.kernel = kernel
        self.policy = EgressPolicy.from_section(kernel.config.section("egress"))
        self._given_resolver = resolver
        self._resolver: AbstractResolver | None = None
        self._agents: dict[str, Allowlist] = {}

    def syscalls(self) -> Mapping[Op, Handler]:
        return {Op.HTTP: self.http}

    async def start(self) -> None:
        # getaddrinfo in a worker thread: the same answer the host's resolver gives, without blocking.
        self._resolver = self._given_resolver or aiohttp.ThreadedResolver()

    async def stop(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()

    def capabilities(self) -> Mapping[str, Any]:
        return {"allow": list(self.policy.allow.texts), "max_bytes": self.policy.max_response_bytes,
                "timeout_s": self.policy.timeout_s}

    # -- per-agent allowlists --------------------------------------------------------

    def allowlist_of(self, identity: Identity) -> Allowlist:
        """What ``identity`` may fetch from."""
        if identity.agent_id is None:
            return self.policy.allow
        return self._agents.get(identity.agent_id, _NOTHING)

    def child_allow(self, parent: Identity, requested: list[str] | None) -> tuple[str, ...]:
        """The allowlist of a child ``parent`` spawns: ``requested`` (canonical entries), each
        covered by the parent's list, or the parent's whole list when None.
        InvalidArgument for a malformed entry, PermissionDenied (field ``egress``) for a wider one."""
        held = self.allowlist_of(parent)
        if requested is None:
            return held.texts
        return held.narrow(requested, "egress").texts

    def assign(self, agent_id: str, allow: tuple[str, ...]) -> None:
        """Give a spawned agent its list (from :meth:`child_allow`), before it can call the kernel."""
        self._agents[agent_id] = Allowlist.parse(allow, "egress")

    def forget(self, agent_id: str) -> None:
        """Drop an agent that will not come back."""
        self._agents.pop(agent_id, None)

    def registry_sizes(self) -> Mapping[str, int]:
        return {"agents": len(self._agents)}

    # -- the HTTP syscall --------------------------------------------------------------

    async def http(self, call: Call) -> dict[str, Any]:
        """``{url, method?, headers?, body? | body_base64?, timeout?, max_bytes?}`` ->
        ``{status, url, headers, body | body_base64}``."""
        args = call.args()
        allowlist = self.allowlist_of(call.identity)
        url = check_url(args.get("url"), allowlist)
        method = args.get("method", "GET")
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise InvalidArgument(f"method must be one of {sorted(METHODS)}, got {method!r}")
        headers = _headers(args.get("headers"))
        data = _body(args)
        timeout, max_bytes = self.policy.limits(args)
        try:
            async with asyncio.timeout(timeout):
                return await self._fetch(allowlist, method.upper(), url, headers, data, max_bytes)
        except TimeoutError:
            raise Timeout(f"{url.host} did not answer within {timeout}s", timeout=timeout) from None
        except aiohttp.ClientError as exc:
            raise Unavailable(f"fetching {url.host} failed: {exc}", host=url.host) from None

    async def _fetch(self, allowlist: Allowlist, method: str, url: URL, headers: dict[str, str],
                     data: bytes | None, max_bytes: int) -> dict[str, Any]:
        assert self._resolver is not None
        # A connector per call: its connections, resolved and checked under this caller's list,
        # are never reused by a caller with another list. No DNS cache: each connection
        # resolves once and goes to what that answer permits.
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self._resolver, allowlist),
                                         use_dns_cache=False)
        # trust_env=False: no proxy or netrc from the kernel's environment leaks into agent traffic.
        async with aiohttp.ClientSession(connector=connector, trust_env=False,
                                         cookie_jar=aiohttp.DummyCookieJar()) as session:
            for _ in range(self.policy.max_redirects + 1):
                async with session.request(method, url, headers=headers, data=data,
                                           allow_redirects=False) as resp:
                    if resp.status in _REDIRECTS and "Location" in resp.headers:
                        # Every hop is checked against the allowlist, not only the first.
                        url = _redirect_target(url, resp.headers["Location"], allowlist)
                        if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                            method, data = "GET", None
                        continue
                    body = await _read_limited(resp, max_bytes)
                    reply: dict[str, Any] = {"status": resp.status, "url": str(resp.url),
                                             "headers": dict(resp.headers)}
                    try:
                        reply["body"] = body.decode("utf-8")
                    except UnicodeDecodeError:
                        reply["body_base64"] = base64.b64encode(body).decode("ascii")
                    return reply
        raise Unavailable(f"more than {self.policy.max_redirects} redirects", url=str(url))


def _redirect_target(url: URL, location: str, allowlist: Allowlist) -> URL:
    """Where a redirect leads, checked like the first URL; what the server says is not the
    caller's invalid argument, so a malformed target is Unavailable."""
    try:
        return check_url(str(url.join(parse_url(location))), allowlist)
    except (ValueError, InvalidArgument):
        raise Unavailable(f"{url.host} redirected to a URL that cannot be fetched",
                          host=url.host) from None


async def _read_limited(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise TooLarge(f"response of {resp.content_length} bytes is over the {max_bytes}-byte limit",
                       limit=max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(f"response is over the {max_bytes}-byte limit", limit=max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _headers(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in raw.items()):
        raise InvalidArgument("headers must be an object of string names to string values")
    bad = sorted(k for k in raw if k.lower() in _FORBIDDEN_HEADERS)
    if bad:
        raise InvalidArgument(f"headers {bad} are set by the kernel, not the agent")
    for name, value in raw.items():
        # A CR or LF would end the header early and let the rest be read as more headers.
        if not _TOKEN.match(name) or _CONTROL.search(value) or not _encodable(value):
            raise InvalidArgument(f"header {ascii(name)} has a name or value that cannot be sent "
                                  "(names are tokens; values are text without control characters)")
    return dict(raw)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _body(args: Mapping[str, Any]) -> bytes | None:
    if "body" in args and "body_base64" in args:
        raise InvalidArgument("give body or body_base64, not both")
    if args.get("body") is not None:
        if not isinstance(args["body"], str) or not _encodable(args["body"]):
            raise InvalidArgument("body must be a UTF-8 string (use body_base64 for bytes)")
        return args["body"].encode()
    if args.get("body_base64") is not None:
        try:
            return base64.b64decode(args["body_base64"], validate=True)
        except (ValueError, TypeError):
            raise InvalidArgument("body_base64 is not valid base64") from None
    return None
