"""The egress subsystem: the HTTP syscall, fetched by the kernel through aiohttp."""
from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from yarl import URL

from ..errors import InvalidArgument, Timeout, TooLarge, Unavailable
from ..kernel.syscalls import Call, Handler
from ..protocol import Op
from .policy import METHODS, EgressPolicy

if TYPE_CHECKING:
    from ..kernel.daemon import Kernel

#: Request headers an agent may not set: the kernel decides routing and framing.
_FORBIDDEN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection",
                                "proxy-authorization", "upgrade"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024


class EgressService:
    """Fetches URLs for agents that hold ``http``, only from allowlisted hosts."""

    name = "egress"

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.policy = EgressPolicy.from_section(kernel.config.section("egress"))
        self._session: aiohttp.ClientSession | None = None

    def syscalls(self) -> Mapping[Op, Handler]:
        return {Op.HTTP: self.http}

    async def start(self) -> None:
        # trust_env=False: no proxy or netrc from the kernel's environment leaks into agent traffic.
        self._session = aiohttp.ClientSession(trust_env=False, auto_decompress=True,
                                              cookie_jar=aiohttp.DummyCookieJar())

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    def capabilities(self) -> Mapping[str, Any]:
        return {"allow": list(self.policy.allow), "max_bytes": self.policy.max_response_bytes,
                "timeout_s": self.policy.timeout_s}

    async def http(self, call: Call) -> dict[str, Any]:
        """``{url, method?, headers?, body? | body_base64?, timeout?, max_bytes?}`` ->
        ``{status, url, headers, body | body_base64}``."""
        assert self._session is not None
        args = call.args()
        url = self.policy.check_url(args.get("url"))
        method = args.get("method", "GET")
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise InvalidArgument(f"method must be one of {sorted(METHODS)}, got {method!r}")
        headers = _headers(args.get("headers"))
        data = _body(args)
        timeout, max_bytes = self.policy.limits(args)
        try:
            async with asyncio.timeout(timeout):
                return await self._fetch(method.upper(), url, headers, data, max_bytes)
        except TimeoutError:
            raise Timeout(f"{url.host} did not answer within {timeout}s", timeout=timeout) from None
        except aiohttp.ClientError as exc:
            raise Unavailable(f"fetching {url.host} failed: {exc}", host=url.host) from None

    async def _fetch(self, method: str, url: URL, headers: dict[str, str], data: bytes | None,
                     max_bytes: int) -> dict[str, Any]:
        assert self._session is not None
        for _ in range(self.policy.max_redirects + 1):
            async with self._session.request(method, url, headers=headers, data=data,
                                             allow_redirects=False) as resp:
                if resp.status in _REDIRECTS and "Location" in resp.headers:
                    # Every hop is checked against the allowlist, not only the first.
                    url = self.policy.check_url(str(url.join(URL(resp.headers["Location"]))))
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
    return dict(raw)


def _body(args: Mapping[str, Any]) -> bytes | None:
    if "body" in args and "body_base64" in args:
        raise InvalidArgument("give body or body_base64, not both")
    if args.get("body") is not None:
        if not isinstance(args["body"], str):
            raise InvalidArgument("body must be a string (use body_base64 for bytes)")
        return args["body"].encode()
    if args.get("body_base64") is not None:
        try:
            return base64.b64decode(args["body_base64"], validate=True)
        except (ValueError, TypeError):
            raise InvalidArgument("body_base64 is not valid base64") from None
    return None
