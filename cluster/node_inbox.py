"""A broker node's side of delivery in a cluster: subscribe to the users whose devices it holds.

A node subscribes to ``hubbub.inbox.<uid>`` while it holds at least one connected device of that
user (a count per user: the first device subscribes, the last one's disconnect unsubscribes), and
hands every event that arrives to its MQTT server's ``to_inbox`` with the event's only/skip
device. So an event crosses to a node only if one of its recipient's devices is connected there,
and once per node however many of the user's devices it holds (the MQTT server fans it out to
them). Subscribe first, then catch up: the first device's CONNACK waits until the subscription is
confirmed by the server (a PING/PONG), so a device that subscribes to its inbox and then syncs
cannot miss a message committed in between (``NodeDeviceEvents.device_connected``, which the MQTT
server awaits). The confirmation comes from the node's own NATS server; the cluster's other
servers learn of the subscription over their routes a moment later, unannounced (NATS has no way
to wait for it), so an event published through another server within that moment can still miss
the node: the device gets it at its next ``seq`` gap or sync, as for any at-most-once delivery.
While NATS is unreachable the node does not hold devices back: nats-py subscribes again on
reconnect, and ``cluster.inbox_resync`` then tells the devices here to catch up on what the gap
lost.

Decoding and delivery run off NATS's read loop: nats-py queues each subscription's messages to a
task of its own, and delivering is a plain call into the MQTT server that never waits, so a busy
node keeps reading its socket and the server does not cut it off as a slow consumer. An event that
arrives on a subscription whose user has meanwhile left (its unsubscribe is in flight) is dropped.

Two subjects reach every node: ``hubbub.device.ended`` closes the device if it is connected here
(the node's ``LiveConnections``, the messaging core's ``end_device``), and
``hubbub.membership.changed`` calls ``forget(conversation_id)`` (the core's
``membership_changed``).

``NodeConnections`` is ``DeviceConnections`` for the messaging core on a node: an event for one
device connected here (an error or an ack for a local sender) is delivered at once; any other goes
over NATS, and comes back through this node's own subscription if its recipient is here too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from cluster.inbox import follow_membership_changes
from hubbub import subjects
from hubbub.connections import DeviceConnections, DeviceEvents, Inboxes
from hubbub.sessions import DeviceEnded, LiveConnections

__all__ = ["InboxCounts", "NodeConnections", "NodeDeviceEvents", "NodeInbox"]

logger = logging.getLogger(__name__)

CONFIRM_TIMEOUT_S = 2.0  # how long a first device's CONNACK waits for NATS to confirm its subscription


@dataclass
class InboxCounts:
    """What the node's subscriptions did (for ``/metrics``)."""

    delivered: int = 0  # events handed to the MQTT server
    stale: int = 0  # events for a user whose last device had left (unsubscribe in flight)
    unconfirmed: int = 0  # subscriptions NATS did not confirm in time (the device was let in anyway)


class _Interest:
    """One user's subscription on this node and how many of its devices are connected here."""

    __slots__ = ("counts", "devices", "local", "ready", "subscription", "user_id")

    def __init__(self, user_id: int, local: Inboxes, counts: InboxCounts) -> None:
        self.user_id = user_id
        self.local = local
        self.counts = counts
        self.devices = 0
        self.subscription: Subscription | None = None
        self.ready: asyncio.Task[None] | None = None  # making the subscription, until it is confirmed

    async def deliver(self, msg: Msg) -> None:
        """An event for this user: to its devices connected here, narrowed by the headers."""
        if not self.devices:
            self.counts.stale += 1
            return
        headers = msg.headers
        if headers:
            only, skip = headers.get(subjects.ONLY_DEVICE), headers.get(subjects.SKIP_DEVICE)
            self.local.to_inbox(self.user_id, msg.data, only_device=only, skip_device=skip)
        else:
            self.local.to_inbox(self.user_id, msg.data)
        self.counts.delivered += 1


class NodeInbox:
    """This node's subscriptions: one per user with a device here, and the two node-wide subjects."""

    def __init__(
        self,
        client: Client,
        local: Inboxes,
        *,
        live: LiveConnections,
        forget: Callable[[int], None],
        confirm_timeout_s: float = CONFIRM_TIMEOUT_S,
    ) -> None:
        self._client = client
        self._local = local
        self._live = live
        self._forget = forget
        self._confirm_timeout_s = confirm_timeout_s
        self._interest: dict[int, _Interest] = {}
        self._broadcasts: list[Subscription] = []
        self._leaving: set[asyncio.Task[None]] = set()
        self._confirming: asyncio.Task[None] | None = None
        self.counts = InboxCounts()

    async def start(self) -> None:
        """Subscribe to ended devices and membership changes, confirmed by the server."""
        client = self._client
        self._broadcasts = [
            await client.subscribe(subjects.device_ended(), cb=self._on_device_ended),
            await follow_membership_changes(client, self._forget),
        ]

    def holds(self, user_id: int) -> bool:
        """Whether this node is subscribed to ``user_id``'s events (a device of it is connected here)."""
        return user_id in self._interest

    def held_users(self) -> list[int]:
        """Every user with a device here, in the order they came (``cluster.inbox_resync``)."""
        return list(self._interest)

    @property
    def users(self) -> int:
        """How many users' events this node is subscribed to."""
        return len(self._interest)

    # --- devices coming and going -------------------------------------------------------------

    def device_connected(self, user_id: int, device_id: str) -> Awaitable[None] | None:
        """Count the device; the user's first device subscribes: wait for that before its CONNACK."""
        del device_id
        interest = self._interest.get(user_id)
        if interest is None:
            interest = self._interest[user_id] = _Interest(user_id, self._local, self.counts)
            interest.ready = asyncio.get_running_loop().create_task(self._subscribe(interest))
        interest.devices += 1
        ready = interest.ready
        return None if ready is None else asyncio.shield(ready)

    def device_disconnected(self, user_id: int, device_id: str) -> None:
        """Count the device out; the user's last device unsubscribes."""
        interest = self._interest.get(user_id)
        if interest is None:
            logger.debug("device_id=%s of user %d left without being counted in", device_id, user_id)
            return
        interest.devices -= 1
        if interest.devices > 0:
            return
        del self._interest[user_id]
        leaving = asyncio.get_running_loop().create_task(self._unsubscribe(interest))
        self._leaving.add(leaving)
        leaving.add_done_callback(self._leaving.discard)

    async def _subscribe(self, interest: _Interest) -> None:
        client = self._client
        try:
            interest.subscription = await client.subscribe(
                subjects.inbox(interest.user_id), cb=interest.deliver
            )
            if client.is_connected:  # while reconnecting, nats-py subscribes again on reconnect
                await asyncio.shield(self._confirmed())
        except (NatsError, OSError, TimeoutError) as exc:
            self.counts.unconfirmed += 1
            logger.warning("inbox subscription of user %d not confirmed: %r", interest.user_id, exc)
        finally:
            interest.ready = None  # done: nothing to wait for (and a finished task not kept per user)

    def _confirmed(self) -> asyncio.Task[None]:
        """A PING/PONG after every subscription sent so far: one for a burst, not one per device.

        After a node dies its devices reconnect elsewhere all at once; the subscriptions made in
        one turn of the event loop share one round trip to the server.
        """
        confirming = self._confirming
        if confirming is None:
            confirming = self._confirming = asyncio.get_running_loop().create_task(self._confirm())
        return confirming

    async def _confirm(self) -> None:
        await asyncio.sleep(0)  # the subscriptions of this turn of the event loop join this PING
        self._confirming = None  # later ones wait for the next PING: this one may be sent already
        async with asyncio.timeout(self._confirm_timeout_s):
            await self._client.flush()

    async def _unsubscribe(self, interest: _Interest) -> None:
        if interest.ready is not None:
            await interest.ready
        subscription, interest.subscription = interest.subscription, None
        if subscription is not None:
            try:
                await subscription.unsubscribe()
            except NatsError as exc:  # the connection closed: no subscription left to remove
                logger.debug("inbox unsubscribe of user %d: %r", interest.user_id, exc)

    async def idle(self) -> None:
        """Wait until every subscribe and unsubscribe begun so far is done (tests; before a flush)."""
        pending = [interest.ready for interest in self._interest.values() if interest.ready is not None]
        pending.extend(self._leaving)
        if pending:
            await asyncio.gather(*pending)

    # --- node-wide subjects -------------------------------------------------------------------

    async def _on_device_ended(self, msg: Msg) -> None:
        try:
            ended = DeviceEnded.from_json(msg.data)
        except ValueError as exc:
            logger.warning("ignored a malformed device-ended event: %s", exc)
            return
        await self._live.end_device(ended)

    async def close(self) -> None:
        """Unsubscribe from everything (the connection itself is closed by its owner)."""
        interests, self._interest = list(self._interest.values()), {}
        for interest in interests:
            interest.devices = 0
            await self._unsubscribe(interest)
        if self._leaving:
            await asyncio.gather(*self._leaving)
        broadcasts, self._broadcasts = self._broadcasts, []
        for subscription in broadcasts:
            try:
                await subscription.unsubscribe()
            except NatsError as exc:
                logger.debug("unsubscribe at close: %r", exc)


class NodeDeviceEvents:
    """``DeviceEvents`` for a broker node's MQTT server: the node's subscriptions, then the core."""

    def __init__(self, events: DeviceEvents, inbox: NodeInbox) -> None:
        self._events = events
        self._inbox = inbox

    def device_connected(self, user_id: int, device_id: str) -> Awaitable[None] | None:
        """Subscribe to the user's events (the CONNACK waits for it), and report to the core."""
        subscribed = self._inbox.device_connected(user_id, device_id)
        reported = self._events.device_connected(user_id, device_id)
        if reported is None:
            return subscribed
        if subscribed is None:
            return reported
        return _both(subscribed, reported)

    def device_disconnected(self, user_id: int, device_id: str) -> None:
        """Report to the core; the user's last device here unsubscribes."""
        self._events.device_disconnected(user_id, device_id)
        self._inbox.device_disconnected(user_id, device_id)

    def send(
        self, user_id: int, device_id: str, conversation_id: int, payload: bytes
    ) -> Awaitable[None] | None:
        """The core's ``send``."""
        return self._events.send(user_id, device_id, conversation_id, payload)

    def typing(self, user_id: int, device_id: str, conversation_id: int) -> Awaitable[None] | None:
        """The core's ``typing``."""
        return self._events.typing(user_id, device_id, conversation_id)

    def inbox_subscribed(self, user_id: int, device_id: str) -> None:
        """The core's ``inbox_subscribed``."""
        self._events.inbox_subscribed(user_id, device_id)

    async def presence_snapshot(self, user_id: int) -> bytes:
        """The core's ``presence_snapshot``."""
        return await self._events.presence_snapshot(user_id)


async def _both(first: Awaitable[None], second: Awaitable[None]) -> None:
    await asyncio.gather(first, second)


class NodeConnections:
    """``DeviceConnections`` for the messaging core on a broker node: local when it can, else NATS."""

    def __init__(self, local: DeviceConnections, cluster: Inboxes) -> None:
        self._local = local
        self._cluster = cluster

    def to_inbox(
        self, user_id: int, payload: bytes, *, only_device: str | None = None, skip_device: str | None = None
    ) -> int:
        """An event for one device connected here goes straight to it; any other over NATS (0 here)."""
        if only_device is not None and self._local.is_connected(only_device):
            return self._local.to_inbox(user_id, payload, only_device=only_device)
        return self._cluster.to_inbox(user_id, payload, only_device=only_device, skip_device=skip_device)

    def set_presence(self, user_id: int, payload: bytes) -> None:
        """This node's retained presence (the presence writer's changes reach every node)."""
        self._local.set_presence(user_id, payload)

    def is_connected(self, device_id: str) -> bool:
        """Whether ``device_id`` is connected to this node."""
        return self._local.is_connected(device_id)

    def drop(self, device_id: str) -> None:
        """Close ``device_id``'s connection if it is on this node (``end_device`` reaches the others)."""
        self._local.drop(device_id)
