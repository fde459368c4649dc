"""The messaging subsystem: mailboxes (SEND, RECV, BROADCAST, REGISTER, ACK) and pub/sub
(SUBSCRIBE, UNSUBSCRIBE, PUBLISH) including the kernel's lifecycle events.

Addresses: an agent's mailbox is its principal, the spawn path that stays the
same when it is restarted (``uid:0/worker``); an outside client's default one is
``uid:<n>``. REGISTER binds a name: for an agent the name becomes an alias of its
mailbox, for an outside client it is a mailbox of its own (``name:<name>``), read
with ``RECV {"name": ...}``. SEND resolves registered names first, then the
names and ids of spawned agents.
"""
from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, Timeout
from ..kernel.syscalls import Call, Handler
from ..permissions.service import permissions_of
from ..protocol import Op
from ..state.database import Database
from .mailbox import SCHEMA, Mailboxes, MailboxLimits
from .pubsub import PubSub, check_pattern, check_topic, is_system_topic

if TYPE_CHECKING:
    from ..kernel.daemon import Kernel

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_UID = re.compile(r"^uid:\d+$")
_ENDED = ("agent.exited", "agent.killed", "agent.oom_killed", "agent.failed")


class MessagingService:
    """Durable mailboxes in ``<state_dir>/mailboxes.db`` and topic streams."""

    name = "messaging"

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        section = kernel.config.section("messaging")
        self.db = Database(kernel.config.state_dir / "mailboxes.db", SCHEMA)
        self.boxes = Mailboxes(self.db, MailboxLimits.from_section(section))
        self.pubsub = PubSub(kernel.events, int(section.get("subscription_backlog", 256)))
        #: RECV futures waiting for mail, per address.
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        #: Per connection and address, the last message id handed out and not yet ACKed.
        self._cursors: dict[Any, dict[str, int]] = {}
        self._live_agents: set[str] = set()
        self._unsubscribe = [kernel.events.subscribe("agent.started", self._on_started),
                             *(kernel.events.subscribe(t, self._on_ended) for t in _ENDED)]

    def syscalls(self) -> Mapping[Op, Handler]:
        return {Op.SEND: self.send, Op.RECV: self.recv, Op.BROADCAST: self.broadcast,
                Op.REGISTER: self.register, Op.ACK: self.ack, Op.SUBSCRIBE: self.subscribe,
                Op.UNSUBSCRIBE: self.unsubscribe, Op.PUBLISH: self.publish}

    async def start(self) -> None:
        await asyncio.to_thread(self.db.open)

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self.pubsub.close_all()
        await asyncio.to_thread(self.db.close)

    def capabilities(self) -> Mapping[str, Any]:
        limits = self.boxes.limits
        return {"mailbox_size": limits.max_messages, "max_message_bytes": limits.max_message_bytes,
                "system_topics": ["agent.*", "kernel.*"]}

    def _on_started(self, topic: str, event: dict[str, Any]) -> None:
        if isinstance(event.get("id"), str):
            self._live_agents.add(event["id"])

    def _on_ended(self, topic: str, event: dict[str, Any]) -> None:
        self._live_agents.discard(event.get("id"))  # type: ignore[arg-type]

    # -- addresses ----------------------------------------------------------------

    def _principal(self, call: Call) -> str:
        return permissions_of(self.kernel).principal(call.identity)

    async def _resolve(self, target: Any) -> str:
        """The mailbox address ``target`` means: a registered name, a running agent's name,
        an agent id, an agent principal (``uid:0/worker``) or an outside uid (``uid:1000``)."""
        if not isinstance(target, str) or not target:
            raise InvalidArgument(f"'to' must be an agent name or id, got {target!r}")
        address = await self.boxes.resolve(target)
        if address is not None:
            return address
        permissions = permissions_of(self.kernel)
        agent_id = permissions.id_of(target)
        if agent_id is None and (target in permissions.agents() or target in self._live_agents):
            agent_id = target
        if agent_id is not None:
            return permissions.agent_principal(agent_id)
        if permissions.find_path(target) is not None or _UID.match(target):
            return target
        raise NotFound(f"no agent or registered name {target!r}", to=target)

    async def _reader_address(self, call: Call, args: dict[str, Any]) -> str:
        """The mailbox a RECV/ACK reads: one of the caller's names, else its default mailbox."""
        own = self._principal(call)
        name = args.get("name")
        if name is None:
            return own
        if not isinstance(name, str) or name not in await self.boxes.names_of(own):
            raise PermissionDenied(f"{name!r} is not a name you registered", name=name)
        address = await self.boxes.resolve(name)
        assert address is not None
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
            raise InvalidArgument("SEND needs a 'body'")
        address = await self._resolve(args.get("to"))
        sender = self._principal(call)
        message = await self.boxes.send(address, sender, args["body"])
        self._wake(address)
        return {"id": message.id, "to": address}

    async def broadcast(self, call: Call) -> dict[str, Any]:
        """``{body}`` into every live agent's and registered name's mailbox but the sender's
        own (its principal: an agent's spawn path, or ``uid:<n>`` for an outside client)."""
        args = call.args()
        if "body" not in args:
            raise InvalidArgument("BROADCAST needs a 'body'")
        permissions = permissions_of(self.kernel)
        sender = permissions.principal(call.identity)
        live = {permissions.agent_principal(agent_id) for agent_id in self._live_agents}
        targets = sorted((live | set(await self.boxes.addresses())) - {sender})
        sent, full = await self.boxes.send_many(targets, sender, args["body"])
        for message in sent:
            self._wake(message.mailbox)
        return {"delivered": len(sent), "full": full}

    async def recv(self, call: Call) -> dict[str, Any]:
        """``{timeout?, name?, ack?}``: the next message, waiting up to ``timeout`` seconds
        (forever if absent). Without ``ack`` it stays stored until ACK; this connection
        is not handed it twice. Timeout error if nothing arrives in time."""
        args = call.args()
        timeout = args.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or timeout < 0):
            raise InvalidArgument(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        auto_ack = bool(args.get("ack", False))
        address = await self._reader_address(call, args)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        cursors = self._cursor(call.conn)
        while True:
            waiter = loop.create_future()
            self._waiters.setdefault(address, set()).add(waiter)
            try:
                message = await self.boxes.next([address], cursors.get(address, 0))
                if message is not None:
                    cursors[address] = message.id
                    if not auto_ack or await self.boxes.ack([address], [message.id]):
                        return message.to_dict()
                    continue  # another reader took it first
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

    async def ack(self, call: Call) -> dict[str, Any]:
        """``{ids, name?}``: delete these delivered messages from your mailbox."""
        args = call.args()
        ids = args.get("ids", [args["id"]] if "id" in args else None)
        if not isinstance(ids, list) or not ids or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise InvalidArgument("ACK needs 'ids', a non-empty list of message ids (or 'id')")
        address = await self._reader_address(call, args)
        acked = await self.boxes.ack([address], ids)
        removed = set(acked)
        return {"acked": acked, "missing": [i for i in ids if i not in removed]}

    async def register(self, call: Call) -> dict[str, Any]:
        """``{name}``: make ``name`` reach you (an alias for an agent, a mailbox for a client)."""
        name = call.args().get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidArgument(f"name {name!r} is not valid: 1-64 letters, digits, '_', '.', '-', "
                                  "starting with a letter or digit")
        identity = call.identity
        permissions = permissions_of(self.kernel)
        owner = permissions.principal(identity)
        holder = permissions.id_of(name)
        if holder is not None and holder != identity.agent_id:
            raise AlreadyExists(f"{name!r} is the name of agent {holder}", name=name)
        address = owner if identity.agent_id is not None else f"name:{name}"
        await self.boxes.register(name, address, owner)
        return {"name": name, "address": address}

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
        sub = self.pubsub.open(self._principal(call), patterns)
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
        sub = self.pubsub.get(sub_id) if isinstance(sub_id, int) else None
        if sub is None or sub.owner != self._principal(call):
            raise NotFound(f"no subscription {sub_id!r} of yours", subscription=sub_id)
        sub.close()
        return {"unsubscribed": sub.id}

    async def publish(self, call: Call) -> dict[str, Any]:
        """``{topic, data}`` to every subscriber; system topics are the kernel's."""
        args = call.args()
        topic = check_topic(args.get("topic"))
        if is_system_topic(topic) and not permissions_of(self.kernel).is_admin(call.identity):
            raise PermissionDenied(f"{topic!r} is a system topic: only the kernel publishes there",
                                   topic=topic)
        data = args.get("data")
        self.boxes.encode(data)  # the same size bound as a message: subscriber queues stay small
        sender = self._principal(call)
        self.kernel.events.publish(topic, {"from": sender, "data": data})
        return {"topic": topic}
