"""The messaging subsystem: mailboxes (SEND, RECV, BROADCAST, REGISTER, ACK) and pub/sub
(SUBSCRIBE, UNSUBSCRIBE, PUBLISH) including the kernel's lifecycle events.

Addresses: an agent's mailbox is its principal, the spawn path that stays the
same when it is restarted (``uid:0/worker``); an outside client's default one is
``uid:<n>``. REGISTER binds a name in the registrant's scope: the namespace its
siblings share (its spawner's principal; an outside client's own ``uid:<n>``), or
the global scope for holders of ``admin``. An agent's name always beats a
registered name: the kernel remembers every principal an agent ever received at,
so a name registered before the agent started (or while it was down, or before a
kernel restart) never captures its mail. docs/messaging.md gives SEND's full
resolution order.

Dead letters (DEAD_LETTERS): a mailbox's owner manages its own, an admin everyone's;
the permission model is RECV's. A message moved to the dead letters is announced on
``mail.dead``, which only that mailbox's owner and admins see.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeGuard

from ..errors import InvalidArgument, NotFound, PermissionDenied, Timeout
from ..kernel.identity import Identity
from ..kernel.syscalls import Call, Handler
from ..permissions.capabilities import Capability
from ..permissions.principal import project_segment
from ..permissions.registry import Permissions
from ..protocol import Op
from ..protocol.lifecycle import ENDED_TOPICS, Topic
from ..protocol.requests import AGENT_REF_PATTERN, ALIAS_PATTERN
from ..state.database import MAX_ADDRESS_BYTES, Database, check_text
from ..units import MAX_SECONDS
from .mailbox import MAX_DELIVERIES, SCHEMA, DeadLetter, Mailboxes, MailboxLimits
from .pubsub import SYSTEM_PREFIXES, PubSub, check_pattern, check_topic, is_system_topic

if TYPE_CHECKING:
    from ..kernel.daemon import Kernel

log = logging.getLogger("agentos.messaging")

_NAME = re.compile(ALIAS_PATTERN)
_UID = re.compile(r"uid:\d{1,10}")
#: ``PROJECT/NAME``: an agent of another project (docs/messaging.md), once ``/`` is seen in it.
_PROJECT_REF = re.compile(AGENT_REF_PATTERN)
#: A message went to its mailbox's dead letters; seen by that mailbox's owner and admins only.
MAIL_DEAD = "mail.dead"
#: The scope of names every caller can reach (registered by admins only).
GLOBAL = ""
#: Message and subscription ids fit in 64 bits, as SQLite integers do.
_MAX_ID = (1 << 63) - 1


class MessagingService:
    """Durable mailboxes in ``<state_dir>/mailboxes.db`` and topic streams."""

    name = "messaging"

    def __init__(self, kernel: Kernel, permissions: Permissions) -> None:
        self.kernel = kernel
        #: Whose mailbox an address is (principals), and who may use reserved names and topics.
        self.permissions = permissions
        section = kernel.config.section("messaging")
        self.db = Database(kernel.config.state_dir / "mailboxes.db", SCHEMA)
        self.boxes = Mailboxes(self.db, MailboxLimits.from_section(section))
        self.pubsub = PubSub(kernel.events, int(section.get("subscription_backlog", 256)))
        #: RECV futures waiting for mail, per address.
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        #: Per connection and address, the last message id handed out and not yet ACKed.
        self._cursors: dict[Any, dict[str, int]] = {}
        self._live_agents: set[str] = set()
        self._unsubscribe = [kernel.events.subscribe(Topic.STARTED, self._on_started),
                             *(kernel.events.subscribe(t, self._on_ended) for t in ENDED_TOPICS)]

    def syscalls(self) -> Mapping[Op, Handler]:
        return {Op.SEND: self.send, Op.RECV: self.recv, Op.BROADCAST: self.broadcast,
                Op.REGISTER: self.register, Op.ACK: self.ack, Op.DEAD_LETTERS: self.dead_letters,
                Op.SUBSCRIBE: self.subscribe,
                Op.UNSUBSCRIBE: self.unsubscribe, Op.PUBLISH: self.publish}

    async def start(self) -> None:
        await asyncio.to_thread(self.db.open)
        await self.boxes.upgrade()

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self.pubsub.close_all()
        await asyncio.to_thread(self.db.close)

    def capabilities(self) -> Mapping[str, Any]:
        limits = self.boxes.limits
        return {"mailbox_size": limits.max_messages, "max_message_bytes": limits.max_message_bytes,
                "max_deliveries": limits.max_deliveries,
                "system_topics": [f"{prefix}*" for prefix in SYSTEM_PREFIXES]}

    def _on_started(self, topic: str, event: dict[str, Any]) -> None:
        agent_id, name = event.get("id"), event.get("name")
        if not isinstance(agent_id, str):
            return
        self._live_agents.add(agent_id)
        if isinstance(name, str):
            # Queued before any later SEND's lookup, on the same database thread.
            principal = self.permissions.agent_principal(agent_id)
            self.boxes.remember_agent(principal, name).add_done_callback(_log_failure)

    def registry_sizes(self) -> Mapping[str, int]:
        return {"live_agents": len(self._live_agents)}

    def _on_ended(self, topic: str, event: dict[str, Any]) -> None:
        self._live_agents.discard(event.get("id"))

    # -- addresses ----------------------------------------------------------------

    def _principal(self, call: Call) -> str:
        return self.permissions.principal(call.identity)

    async def _resolve(self, identity: Identity, target: Any) -> str:
        """The mailbox address ``to`` means (docs/messaging.md, "Addresses", in this order):
        an agent id; an agent principal or ``uid:<n>``; an agent's name, nearest to the
        sender first; a registered name, nearest scope first, global last."""
        target = check_text(target, "to", MAX_ADDRESS_BYTES)
        permissions = self.permissions
        if permissions.knows(target):
            return permissions.agent_principal(target)
        if _UID.fullmatch(target):
            return target
        if "/" in target:
            if permissions.find_path(target) is not None or await self.boxes.is_agent(target):
                return target
            in_project = await self._in_project(identity, target)
            if in_project is not None:
                return in_project
            raise NotFound(f"no agent receives at {target!r}", to=target)
        scopes = _scopes(permissions.principal(identity))
        found = await self.boxes.lookup(target, [*scopes, GLOBAL])
        live = permissions.ids_named(target)
        # The sender's own project first: another team's agent of that name only if it has none.
        project = permissions.project_of(identity.agent_id) if identity.agent_id is not None else None
        live = [a for a in live if permissions.project_of(a) == project] or live
        known = {permissions.agent_principal(agent_id) for agent_id in live} | set(found.agents)
        for scope in scopes:
            if f"{scope}/{target}" in known:
                return f"{scope}/{target}"
        running = [agent_id for agent_id in live if agent_id in self._live_agents]
        if running or live:
            return permissions.agent_principal((running or live)[-1])
        if found.agents:
            return found.agents[0]
        if found.alias is not None:
            return found.alias
        raise NotFound(f"no agent or registered name {target!r}", to=target)

    async def _in_project(self, identity: Identity, target: str) -> str | None:
        """The principal of ``PROJECT/NAME``: that project's agent of that name (the running one,
        else the newest), or, while none is known, the sender's uid's top-level agent there."""
        if not _PROJECT_REF.fullmatch(target):
            return None
        project, _, name = target.partition("/")
        permissions = self.permissions
        known = [a for a in permissions.ids_named(name) if permissions.project_of(a) == project]
        running = [a for a in known if a in self._live_agents]
        if running or known:
            return permissions.agent_principal((running or known)[-1])
        root = permissions.principal(identity).partition("/")[0]
        principal = f"{root}/{project_segment(project)}/{name}"
        return principal if await self.boxes.is_agent(principal) else None

    async def _reader_address(self, call: Call, args: dict[str, Any]) -> str:
        """The mailbox a RECV/ACK reads: one of the caller's names, else its default mailbox."""
        own = self._principal(call)
        name = args.get("name")
        if name is None:
            return own
        address = await self.boxes.address_of(own, _check_name(name))
        if address is None:
            raise PermissionDenied(f"{name!r} is not a name you registered", field="name", name=name)
        return address

    def _wake(self, address: str) -> None:
        for waiter in self._waiters.pop(address, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _cursor(self, conn: Any) -> dict[str, int]:
        cursors = self._cursors.get(conn)
        if cursors is None:
            # Forget connections that closed (the reactor has no per-service close hook).
            for old in [c for c in self._cursors if getattr(c, "closed", False)]:
                del self._cursors[old]
            cursors = self._cursors[conn] = {}
        return cursors

    # -- mailboxes ------------------------------------------------------------------

    async def send(self, call: Call) -> dict[str, Any]:
        """``{to, body}`` -> the stored message's id. Busy if the mailbox is full."""
        args = call.args()
        if "body" not in args:
            raise InvalidArgument("SEND needs a 'body'", field="body")
        address = await self._resolve(call.identity, args.get("to"))
        sender = self._principal(call)
        message = await self.boxes.send(address, sender, args["body"])
        self._wake(address)
        return {"id": message.id, "to": address}

    async def broadcast(self, call: Call) -> dict[str, Any]:
        """``{body}`` into every live agent's and registered name's mailbox but the sender's
        own (its principal: an agent's spawn path, or ``uid:<n>`` for an outside client)."""
        args = call.args()
        if "body" not in args:
            raise InvalidArgument("BROADCAST needs a 'body'", field="body")
        permissions = self.permissions
        sender = permissions.principal(call.identity)
        live = {permissions.agent_principal(agent_id) for agent_id in self._live_agents}
        targets = sorted((live | set(await self.boxes.addresses())) - {sender})
        sent, full = await self.boxes.send_many(targets, sender, args["body"])
        for message in sent:
            self._wake(message.mailbox)
        return {"delivered": len(sent), "full": full}

    async def recv(self, call: Call) -> dict[str, Any]:
        """``{timeout?, name?, ack?, max_deliveries?}``: the next message, waiting up to
        ``timeout`` seconds (forever if absent). Without ``ack`` it stays stored until ACK;
        this connection is not handed it twice. A message already delivered
        ``max_deliveries`` times goes to the dead letters instead. Timeout error if nothing
        arrives in time."""
        args = call.args()
        timeout = args.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not 0 <= timeout <= MAX_SECONDS):
            raise InvalidArgument(f"timeout must be a number of seconds from 0 to {MAX_SECONDS:.0f}, "
                                  f"got {timeout!r}", field="timeout")
        auto_ack = args.get("ack", False)
        if not isinstance(auto_ack, bool):
            raise InvalidArgument(f"ack must be true or false, got {auto_ack!r}", field="ack")
        max_deliveries = args.get("max_deliveries", self.boxes.limits.max_deliveries)
        if isinstance(max_deliveries, bool) or not isinstance(max_deliveries, int) or not (
                0 < max_deliveries <= MAX_DELIVERIES):
            raise InvalidArgument(f"max_deliveries must be an integer from 1 to {MAX_DELIVERIES}, "
                                  f"got {max_deliveries!r}", field="max_deliveries")
        address = await self._reader_address(call, args)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        cursors = self._cursor(call.conn)
        while True:
            waiter = loop.create_future()
            self._waiters.setdefault(address, set()).add(waiter)
            try:
                buried: list[DeadLetter] = []
                message = await self.boxes.next([address], cursors.get(address, 0),
                                                max_deliveries=max_deliveries, remove=auto_ack,
                                                buried=buried)
                for letter in buried:
                    self._announce_dead(call.identity, letter)
                if message is not None:
                    cursors[address] = message.id
                    return message.to_dict()
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    raise Timeout(f"no message for {address} within {timeout}s", timeout=timeout)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(waiter, remaining)
            finally:
                waiters = self._waiters.get(address)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[address]

    def _announce_dead(self, reader: Identity, letter: DeadLetter) -> None:
        """Publish ``mail.dead`` for a letter RECV moved. The reader is the mailbox's owner:
        RECV reads only the caller's own mailbox or one of its registered names."""
        permissions = self.permissions
        self.kernel.events.publish(MAIL_DEAD, {
            "mailbox": letter.mailbox, "principal": permissions.principal(reader), "id": letter.id,
            "deliveries": letter.deliveries, "sender": letter.sender,
            "project": permissions.project_of(reader.agent_id) if reader.agent_id is not None else None})

    async def ack(self, call: Call) -> dict[str, Any]:
        """``{ids, name?}``: delete these delivered messages from your mailbox."""
        args = call.args()
        ids = self._ids(args.get("ids", [args["id"]] if "id" in args else None), "ACK")
        address = await self._reader_address(call, args)
        acked = await self.boxes.ack([address], ids)
        return {"acked": acked, "missing": _missing(ids, acked)}

    def _ids(self, ids: Any, what: str) -> list[int]:
        # No mailbox holds more messages (or dead letters) than its bound, so no call needs more.
        most = self.boxes.limits.max_messages
        if not isinstance(ids, list) or not 0 < len(ids) <= most or not all(_is_id(i) for i in ids):
            raise InvalidArgument(f"{what} needs 'ids', a list of 1 to {most} message ids (integers)"
                                  f"{', or one id' if what == 'ACK' else ''}", field="ids")
        return ids

    async def dead_letters(self, call: Call) -> dict[str, Any]:
        """``{action?, mailbox?, name?, ids?, limit?, project?}``: list (the default), requeue or
        drop the dead letters of mailboxes you manage, or ``stats``: how many messages wait and
        how many dead letters are kept in each (those holding any, deepest first): your own
        (yours by ``name``; ``*`` is all of yours), and for an admin anyone's (``mailbox``
        resolved as SEND's ``to``; ``*`` is every mailbox); a list narrowed to ``project``'s
        agents' mailboxes."""
        args = call.args()
        action = args.get("action", "list")
        if action not in ("list", "requeue", "drop", "stats"):
            raise InvalidArgument(f"action must be 'list', 'requeue', 'drop' or 'stats', got {action!r}",
                                  field="action")
        if action in ("list", "stats"):
            limit = args.get("limit", 100)
            if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= 10_000:
                raise InvalidArgument(f"limit must be an integer from 1 to 10000, got {limit!r}",
                                      field="limit")
            addresses = await self._managed(call, args, default_all=False)
            project = args.get("project")
            root = f"*/{project_segment(project)}" if isinstance(project, str) else None
            if action == "stats":
                # The deepest first: what a page of mailboxes should show when there are many.
                found = sorted((await self.boxes.depths(addresses, under=root)).items(),
                               key=lambda item: (-item[1][0], -item[1][1], item[0]))
                return {"mailboxes": [{"mailbox": box, "depth": depth, "dead": dead}
                                      for box, (depth, dead) in found[:limit]], "more": len(found) > limit}
            letters, more = await self.boxes.dead(addresses, limit, under=root)
            return {"dead": [letter.to_dict() for letter in letters], "more": more}
        ids = self._ids(args.get("ids"), action)
        addresses = await self._managed(call, args, default_all=True)
        if action == "drop":
            dropped = await self.boxes.drop(ids, addresses)
            return {"dropped": dropped, "missing": _missing(ids, dropped)}
        done = await self.boxes.requeue(ids, addresses)
        for _, message in done.requeued:
            self._wake(message.mailbox)
        return {"requeued": [{"id": old, "new_id": message.id, "to": message.mailbox}
                             for old, message in done.requeued],
                "missing": done.missing, "full": done.full}

    async def _managed(self, call: Call, args: dict[str, Any], *, default_all: bool) -> list[str] | None:
        """The mailboxes a dead-letter call may touch; None for all of them (admins only).

        Without ``mailbox`` or ``name``: all the caller manages if ``default_all``, else its
        own mailbox, as RECV reads it."""
        mailbox = args.get("mailbox")
        if args.get("name") is not None or (mailbox is None and not default_all):
            return [await self._reader_address(call, args)]
        identity = call.identity
        admin = self.permissions.is_admin(identity)
        if mailbox is None or mailbox == "*":
            return None if admin else await self._own_addresses(identity)
        address = await self._resolve(identity, mailbox)
        if not admin and address not in await self._own_addresses(identity):
            raise PermissionDenied(f"{mailbox!r} is not your mailbox: only its owner or an admin "
                                   "may see or move its dead letters", field="mailbox")
        return [address]

    async def _own_addresses(self, identity: Identity) -> list[str]:
        """The caller's mailbox and those of the names it registered."""
        own = self.permissions.principal(identity)
        return sorted({own, *await self.boxes.owned_addresses(own)})

    async def register(self, call: Call) -> dict[str, Any]:
        """``{name}``: make ``name`` reach you (an alias for an agent, a mailbox for a client),
        in your scope, or the global one if you are admin. An agent's name is refused."""
        name = _check_name(call.args().get("name"))
        identity = call.identity
        permissions = self.permissions
        owner = permissions.principal(identity)
        is_agent = identity.agent_id is not None
        # The database refuses the name of every agent that ever started here; this also covers
        # one whose start is still being recorded. By principal, not id: a restarted agent may
        # register its own name again.
        for agent_id in permissions.ids_named(name):
            if permissions.agent_principal(agent_id) != owner:
                raise PermissionDenied(f"{name!r} is the name of agent {agent_id}: an agent's name "
                                       "always reaches that agent", field="name", name=name)
        # Siblings share a scope (an agent's is its spawner's principal; a client's, its own).
        scope = GLOBAL if permissions.is_admin(identity) else (
            owner.rpartition("/")[0] if is_agent else owner)
        address = owner if is_agent else f"name:{f'{scope}/' if scope else ''}{name}"
        await self.boxes.register(scope, name, address, owner)
        return {"name": name, "address": address, "scope": scope or "global"}

    async def purge(self, root: str) -> dict[str, int]:
        """Remove the mailboxes, dead letters and names at or beneath the principal glob ``root``
        (a project's part, for PURGE); its agents' names stop shadowing registrations."""
        return await self.boxes.purge(root)

    # -- pub/sub ---------------------------------------------------------------------

    async def subscribe(self, call: Call) -> dict[str, Any]:
        """``{topics}``: stream ``{"subscribed": id}``, then every matching event, until
        UNSUBSCRIBE or disconnect."""
        topics = call.args().get("topics")
        if isinstance(topics, str):
            topics = [topics]
        if not isinstance(topics, list) or not topics or len(topics) > 64:
            raise InvalidArgument("SUBSCRIBE needs 'topics': 1-64 topics or patterns ('agent.*')")
        patterns = [check_pattern(t) for t in topics]
        owner = self._principal(call)
        identity = call.identity
        permissions = self.permissions

        def visible(topic: str, event: dict[str, Any]) -> bool:
            # Decided per event, not at SUBSCRIBE: SET_PERMS may have changed who may see what.
            if topic == MAIL_DEAD:
                # A mailbox's events follow DEAD_LETTERS' rule: its owner and admins.
                return event.get("principal") == owner or permissions.is_admin(identity)
            if topic.startswith("agent."):
                # LIST's rule, so an agent's existence leaks through events no more than there.
                agent_id = event.get("id")
                if isinstance(agent_id, str):
                    return permissions.may_observe(identity, agent_id)
                return permissions.holds(identity, Capability.OBSERVE)
            return True

        sub = self.pubsub.open(owner, patterns, visible)
        try:
            await call.stream({"subscribed": sub.id, "topics": patterns})
            while (event := await sub.next()) is not None:
                await call.stream(event)
            return {"unsubscribed": sub.id}
        finally:
            self.pubsub.discard(sub)

    async def unsubscribe(self, call: Call) -> dict[str, Any]:
        """``{subscription}``: end one of your subscriptions' streams."""
        sub_id = call.args().get("subscription")
        if not _is_id(sub_id):
            raise InvalidArgument(f"subscription must be a subscription id (an integer), got {sub_id!r}",
                                  field="subscription")
        sub = self.pubsub.get(sub_id)
        if sub is None or sub.owner != self._principal(call):
            raise NotFound(f"no subscription {sub_id!r} of yours", subscription=sub_id)
        sub.close()
        return {"unsubscribed": sub.id}

    async def publish(self, call: Call) -> dict[str, Any]:
        """``{topic, data}`` to every subscriber; system topics are the kernel's."""
        args = call.args()
        topic = check_topic(args.get("topic"))
        if is_system_topic(topic) and not self.permissions.is_admin(call.identity):
            raise PermissionDenied(f"{topic!r} is a system topic: only the kernel publishes there",
                                   topic=topic)
        data = args.get("data")
        self.boxes.encode(data)  # the same size bound as a message: subscriber queues stay small
        sender = self._principal(call)
        self.kernel.events.publish(topic, {"from": sender, "data": data})
        return {"topic": topic}


def _scopes(principal: str) -> list[str]:
    """Where a name is looked up for ``principal``, nearest first: its own children's
    scope, its siblings', its parent's siblings' ... up to its root (``uid:0/a/b`` ->
    ``uid:0/a/b``, ``uid:0/a``, ``uid:0``)."""
    scopes = [principal]
    while "/" in scopes[-1]:
        scopes.append(scopes[-1].rpartition("/")[0])
    return scopes


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgument(f"name {name!r} is not valid: 1-64 letters, digits, '_', '.', '-', "
                              "starting with a letter or digit", field="name")
    return name


def _missing(ids: list[int], done: list[int]) -> list[int]:
    found = set(done)
    return [i for i in ids if i not in found]


def _is_id(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_ID


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("could not record an agent's principal: %s", future.exception())
