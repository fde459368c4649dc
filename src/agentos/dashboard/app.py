"""The dashboard's aiohttp application: authentication, the views, the streams and the actions.

One kernel connection serves the pages, the sampler and the actions; each log or audit stream
opens its own, so that a browser leaving ends it in the kernel too (closing the connection
is what stops a kernel-side follow).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from ..client import AsyncClient
from ..errors import AgentOSError, ConnectionClosed, SyscallError
from ..protocol.lifecycle import Topic
from . import views
from .auth import COOKIE, CSRF_FIELD, CSRF_HEADER, Guard, Listen
from .history import History

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: HTTP status of an action the kernel refused, by its error code.
_STATUS = {"permission_denied": 403, "not_found": 404, "invalid_argument": 400, "busy": 409,
           "already_exists": 409, "unavailable": 503, "timeout": 504}
#: How an action button maps to a syscall of the SDK.
_VERBS = {"kill": "kill", "pause": "pause", "resume": "resume", "restart": "start"}
#: The views whose content the page fetches again (``/partial/<view>``) while it is open.
_PARTIALS = ("agents", "think", "approvals", "mail")
#: The static files the page loads, served from the package (no CDN, no build step).
_STATIC = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
#: Sent with every answer: nothing embeds the page, loads foreign code, or leaks the token.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: A comment line on an idle stream, so that a browser gone away is noticed.
_HEARTBEAT = 15.0
#: Seconds before trying the kernel's socket again once it went away, doubling up to the most.
RECONNECT_FIRST = 0.2
RECONNECT_MOST = 2.0


class KernelDown(AgentOSError):
    """The kernel went away; the dashboard is reconnecting."""


class Dashboard:
    """``agentos dashboard``: serve the page for the kernel at ``socket`` on ``listen``."""

    def __init__(self, socket: Path, listen: Listen, *, interval: float = 2.0, token: str | None = None) -> None:
        self.socket = socket
        self.listen = listen
        self.guard = Guard(token)
        self.history = History(interval)
        self.client: AsyncClient | None = None
        #: Since when the kernel is gone (``time.time()``), while the dashboard reconnects.
        self.down_since: float | None = None
        self.url = ""

    # --- running ----------------------------------------------------------------------------

    async def run(self, ready: Callable[[str], None]) -> None:
        """Serve until cancelled; ``ready`` gets the URL with the token once listening. The
        first connection must succeed (a wrong ``--socket`` is an error); after that, a kernel
        that goes away (a restart, an upgrade) is waited for and reconnected to, the page
        saying so meanwhile."""
        client = await AsyncClient.connect(self.socket)
        runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None)
        try:
            await runner.setup()
            site = web.TCPSite(runner, self.listen.host, self.listen.port)
            await site.start()
            port = runner.addresses[0][1]
            self.guard.bind(self.listen, port)
            self.url = f"http://{self.listen.url_host}:{port}/?token={self.guard.token}"
            ready(self.url)
            while True:
                await self._serve(client)
                self.down_since = time.time()
                log.warning("dashboard: the kernel closed its connection; reconnecting to %s", self.socket)
                client = await self._reconnect()
                self.down_since = None
                log.warning("dashboard: connected to the kernel again")
        finally:
            await client.close()
            await runner.cleanup()

    async def _serve(self, client: AsyncClient) -> None:
        """Sample the kernel over ``client`` until its connection closes."""
        self.client = client
        sampler = asyncio.ensure_future(self.history.sample(client))
        topics = asyncio.ensure_future(self.history.watch_topics(client))
        try:
            await sampler  # ends only by the kernel going away (or this task's cancel)
        except ConnectionClosed:
            pass
        finally:
            self.client = None
            for task in (sampler, topics):
                task.cancel()
            await asyncio.gather(sampler, topics, return_exceptions=True)
            await client.close()

    async def _reconnect(self) -> AsyncClient:
        delay = RECONNECT_FIRST
        while True:
            await asyncio.sleep(delay)
            try:
                return await AsyncClient.connect(self.socket)
            except (AgentOSError, OSError):
                delay = min(delay * 2, RECONNECT_MOST)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._secure])
        app.add_routes([
            web.get("/", self._root),
            web.get("/agents", self._page), web.get("/think", self._page), web.get("/mail", self._page),
            web.get("/approvals", self._page),
            web.get("/audit", self._page), web.get("/logs", self._logs_page),
            web.get("/partial/{view}", self._partial), web.get("/status", self._status),
            web.get("/stream/logs", self._stream_logs), web.get("/stream/audit", self._stream_audit),
            web.post("/action/{verb}", self._action), web.post("/approval/{verb}", self._settle),
            web.get("/static/{name}", self._static),
        ])
        return app

    # --- who may ask --------------------------------------------------------------------------

    @web.middleware
    async def _secure(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await self._checked(request, handler)
        response.headers.update(_HEADERS)
        return response

    async def _checked(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.guard.valid_host(request.host):
            # A page of another site that rebound its name to 127.0.0.1 arrives with its own Host.
            return web.Response(status=421, text="wrong Host for this dashboard\n")
        given = request.query.get("token")
        if given is not None:
            if not self.guard.valid_token(given) or request.method != "GET":
                return web.Response(status=401, text=views.unauthorized(), content_type="text/html")
            # The token leaves the address bar (and history) at once; the cookie carries it on.
            query = {k: v for k, v in request.query.items() if k != "token"}
            response = web.HTTPSeeOther(request.rel_url.with_query(query) if query else request.path)
            response.set_cookie(COOKIE, self.guard.token, httponly=True, samesite="Strict", path="/")
            return response
        if not self.guard.valid_token(request.cookies.get(COOKIE)):
            return web.Response(status=401, text=views.unauthorized(), content_type="text/html")
        if request.method != "GET":
            refusal = await self._csrf_refusal(request)
            if refusal is not None:
                return web.json_response({"ok": False, "code": "csrf", "message": refusal}, status=403)
        try:
            return await handler(request)
        except web.HTTPException as exc:
            return exc
        except (KernelDown, ConnectionClosed):
            # Down now, or went down during this request: the page says so and retries.
            if request.method != "GET":
                return web.json_response({"ok": False, "code": "unavailable", "message": views.DOWN}, status=503)
            down = views.kernel_down(self.down_since)
            if request.path.startswith("/partial/"):
                return web.Response(status=503, text=down, content_type="text/html")
            view = request.path.strip("/")
            if view not in dict(views.VIEWS):
                view = "agents"
            return web.Response(status=503, text=views.page(view, down, csrf=self.guard.csrf, refresh=view != "audit"),
                                content_type="text/html")

    async def _csrf_refusal(self, request: web.Request) -> str | None:
        if not self.guard.same_origin(request.headers.get("Origin")):
            return "cross-origin request refused"
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return "cross-site request refused"
        token = request.headers.get(CSRF_HEADER)
        if token is None:
            token = str((await request.post()).get(CSRF_FIELD, "")) or None
        return None if self.guard.valid_csrf(token) else "missing or wrong CSRF token"

    # --- pages --------------------------------------------------------------------------------

    @property
    def kernel(self) -> AsyncClient:
        if self.client is None:
            raise KernelDown(views.DOWN)
        return self.client

    async def _status(self, request: web.Request) -> web.StreamResponse:
        """Whether the kernel is there: the page's script shows a banner while it is not."""
        return web.json_response({"kernel": "down" if self.client is None else "up",
                                  "down_since": self.down_since})

    async def _root(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/agents")

    async def _page(self, request: web.Request) -> web.StreamResponse:
        view = request.path.strip("/")
        body = views.audit_view() if view == "audit" else await self._render(view)
        return self._html(views.page(view, body, csrf=self.guard.csrf, refresh=view != "audit"))

    async def _logs_page(self, request: web.Request) -> web.StreamResponse:
        agents = await self.kernel.list_agents()
        body = views.logs_view(agents, request.query.get("id"), request.query.get("project"))
        return self._html(views.page("logs", body, csrf=self.guard.csrf, refresh=False))

    async def _partial(self, request: web.Request) -> web.StreamResponse:
        view = request.match_info["view"]
        if view not in _PARTIALS:
            raise web.HTTPNotFound()
        return self._html(await self._render(view))

    async def _render(self, view: str) -> str:
        try:
            return await self._render_from_kernel(view)
        except SyscallError as exc:
            return f'<p class="problem">{views.e(exc.code.value)}: {views.e(exc.message)}</p>'

    async def _render_from_kernel(self, view: str) -> str:
        client = self.kernel
        if view == "agents":
            hello, agents = await asyncio.gather(client.hello(), client.list_agents(include=["isolation"]))
            return views.agents_view(hello, agents, self.history, self.guard.csrf)
        if view == "think":
            usage = await client.usage()
            self.history.usage_allowed = True
            return views.think_view(usage, self.history)
        if view == "approvals":
            return views.approvals_view(await client.approvals(), self.guard.csrf)
        dead: dict[str, Any] | None = None
        stats: dict[str, Any] | None = None
        refusal = None
        try:
            stats, dead = await asyncio.gather(client.mailbox_stats("*"), client.dead_letters("*"))
        except SyscallError as exc:
            refusal = f"mailboxes: {exc.code.value}: {exc.message}"
        return views.mail_view(stats, dead, refusal, self.history)

    @staticmethod
    def _html(text: str) -> web.Response:
        return web.Response(text=text, content_type="text/html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        data = resources.files(__package__).joinpath("static", name).read_bytes()
        return web.Response(body=data, content_type=_STATIC[name])

    # --- actions ------------------------------------------------------------------------------

    async def _action(self, request: web.Request) -> web.StreamResponse:
        verb = request.match_info["verb"]
        if verb not in _VERBS:
            raise web.HTTPNotFound()
        form = await request.post()
        agent_id = str(form.get("id", ""))
        if not agent_id:
            return web.json_response({"ok": False, "code": "invalid_argument", "message": "id: missing"},
                                     status=400)
        method = getattr(self.kernel, _VERBS[verb])
        try:
            # The kernel checks this uid's permission on the agent, as for `agentos kill` etc.
            answer = await method(id=agent_id)
        except SyscallError as exc:
            return _refused(exc)
        return web.json_response({"ok": True, "message": f"{verb}: {answer.get('name')} {answer.get('status')}",
                                  "agent": {k: answer.get(k) for k in ("id", "name", "status")}})

    async def _settle(self, request: web.Request) -> web.StreamResponse:
        """Approve or deny a waiting MCP tool call, as ``agentos approve``/``deny`` would."""
        verb = request.match_info["verb"]
        if verb not in ("approve", "deny"):
            raise web.HTTPNotFound()
        form = await request.post()
        approval_id = str(form.get("id", ""))
        if not approval_id:
            return web.json_response({"ok": False, "code": "invalid_argument", "message": "id: missing"},
                                     status=400)
        reason = str(form.get("reason", "")).strip() or None
        method = self.kernel.approve if verb == "approve" else self.kernel.deny
        try:
            # The kernel decides who may: the agent's owner (this uid) or an admin, never an agent.
            record = await method(approval_id, reason)
        except SyscallError as exc:
            return _refused(exc)
        whose = record.get("name") or f"uid:{record.get('owner_uid')}"
        return web.json_response({"ok": True, "message": f"{record['id']} {record['status']}: "
                                                         f"{record['tool']} for {whose}",
                                  "approval": {k: record.get(k) for k in ("id", "status", "tool", "reason")}})

    # --- streams (Server-Sent Events) ---------------------------------------------------------

    async def _stream_logs(self, request: web.Request) -> web.StreamResponse:
        agent_id, project = request.query.get("id"), request.query.get("project")
        if not agent_id and project is None:
            raise web.HTTPBadRequest(text="give id= or project=")
        response = await _sse(request)
        async with self._own_connection(response) as client:
            if agent_id:
                await _follow(client, response, agent_id)
            else:
                await _follow_project(client, response, project or "")
        return response

    async def _stream_audit(self, request: web.Request) -> web.StreamResponse:
        response = await _sse(request)
        async with self._own_connection(response) as client:
            records = await client.audit(follow=True, limit=200)
            async for record in _with_heartbeat(records, response):
                await _send(response, "audit", record)
        return response

    @asynccontextmanager
    async def _own_connection(self, response: web.StreamResponse) -> AsyncIterator[AsyncClient]:
        """A connection of this stream's own, closed with it; a refusal is sent as a ``problem``."""
        try:
            async with await AsyncClient.connect(self.socket) as client:
                yield client
        except SyscallError as exc:
            await _send(response, "problem", {"code": exc.code.value, "message": exc.message})
        except AgentOSError as exc:
            await _send(response, "problem", {"code": "unavailable", "message": str(exc)})
        except ConnectionResetError:
            pass  # the browser left


def _refused(exc: SyscallError) -> web.Response:
    """An action the kernel refused, with its code and message for the page to show."""
    return web.json_response({"ok": False, "code": exc.code.value, "message": exc.message},
                             status=_STATUS.get(exc.code.value, 500))


async def _sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **_HEADERS})
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, event: str, data: Any) -> None:
    await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())


async def _with_heartbeat(items: AsyncIterator[Any], response: web.StreamResponse) -> AsyncIterator[Any]:
    """``items``, writing a comment to ``response`` whenever none came for a while."""
    pending: asyncio.Future[Any] = asyncio.ensure_future(items.__anext__())
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=_HEARTBEAT)
            if not done:
                await response.write(b": still here\n\n")
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            yield item
            pending = asyncio.ensure_future(items.__anext__())
    finally:
        pending.cancel()


async def _follow(client: AsyncClient, response: web.StreamResponse, agent_id: str,
                  name: str | None = None) -> None:
    """One agent's output as ``line`` events (whole lines; a last partial one at its end)."""
    pending = ""
    async for chunk in _with_heartbeat(client.follow_logs(id=agent_id), response):
        *complete, pending = (pending + chunk).split("\n")
        for line in complete:
            await _send(response, "line", {"agent": name, "text": line})
    if pending:
        await _send(response, "line", {"agent": name, "text": pending})
    await _send(response, "ended", {"agent": name})


async def _follow_project(client: AsyncClient, response: web.StreamResponse, project: str) -> None:
    """Every agent of ``project``, prefixed by name, those started later included, until the
    browser leaves."""
    following: dict[str, asyncio.Task[None]] = {}

    def follow(agent: dict[str, Any]) -> None:
        if agent["id"] not in following:
            following[agent["id"]] = asyncio.ensure_future(
                _follow(client, response, agent["id"], agent["name"]))

    try:
        async with await client.subscribe(Topic.STARTED) as events:
            for agent in await client.list_agents(project=project):
                follow(agent)
            async for event in _with_heartbeat(events, response):
                if (event.get("project") or "") == project:
                    follow(event)
    finally:
        for task in following.values():
            task.cancel()
        await asyncio.gather(*following.values(), return_exceptions=True)

