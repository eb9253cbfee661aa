"""Events for users' devices, from any process of a cluster to the broker nodes that hold them.

``NatsInboxes`` is what a sender uses where one node used the MQTT server: the persister's fan-out
of committed messages (``hubbub.connections.Inboxes``), the API's conversation events and
membership changes (``hubbub.stores.InboxPublisher``) and ended devices
(``hubbub.sessions.LiveConnections``). Each event is one core NATS publish on
``hubbub.inbox.<uid>``, whatever the number of the user's devices or nodes: at most once on the
wire, to the nodes that subscribed because they hold one of the user's devices
(``cluster.node_inbox``). ``only_device`` / ``skip_device`` travel as headers; an event without
them carries no header block at all. ``follow_membership_changes`` is the other end of
``membership_changed``, for any process that caches members (broker nodes, persisters, notifiers,
API nodes), and ``forget_memberships_on_reconnect`` goes with it: a change published while the
process's connection was down is lost (core NATS), so every reconnect forgets the whole cache.

``to_inbox`` must not wait (the fan-out calls it once per recipient, and the MQTT server's own
``to_inbox`` never waits), while nats-py publishes with a coroutine. So events go to an outbox
that one task drains in order into the client's buffer (which it flushes on its own): one wake-up
per burst, not a task per event, and events leave in the order they were sent. The outbox is
bounded: while NATS is unreachable and the client's own buffer is full, the oldest events are
dropped and counted, which at-most-once delivery allows (a device that sees a ``seq`` gap, or
reconnects, catches up from history).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from cluster.connection import ConnectionState
from cluster.reconnect_rounds import RECONNECT_SETTLE_S
from hubbub import subjects
from hubbub.sessions import DeviceEnded

__all__ = [
    "OUTBOX_LIMIT",
    "NatsInboxes",
    "follow_membership_changes",
    "forget_memberships_on_reconnect",
    "membership_payload",
    "parse_membership",
]

logger = logging.getLogger(__name__)

OUTBOX_LIMIT = 100_000  # events waiting for the NATS client before the oldest are dropped

_Event = tuple[str, bytes, dict[str, str] | None]  # subject, payload, headers


def membership_payload(conversation_id: int) -> bytes:
    """The body of ``hubbub.membership.changed``: the conversation id in decimal."""
    return str(conversation_id).encode()


def parse_membership(payload: bytes) -> int:
    """The conversation id of a ``membership_payload``; ``ValueError`` for anything else."""
    if not payload.isdigit():
        raise ValueError(f"not a conversation id: {payload[:40]!r}")
    return int(payload)


async def follow_membership_changes(client: Client, forget: Callable[[int], None]) -> Subscription:
    """Call ``forget(conversation_id)`` for every membership change any process publishes.

    For whatever caches members: every broker node (its core's ``membership_changed``, through
    ``NodeInbox``) and a persister that looks members up for its fan-out.
    """

    async def changed(msg: Msg) -> None:
        try:
            conversation_id = parse_membership(msg.data)
        except ValueError as exc:
            logger.warning("ignored a malformed membership-changed event: %s", exc)
            return
        forget(conversation_id)

    subscription = await client.subscribe(subjects.membership_changed(), cb=changed)
    await client.flush()
    return subscription


def forget_memberships_on_reconnect(
    state: ConnectionState, forget_all: Callable[[], None], *, settle_s: float = RECONNECT_SETTLE_S
) -> None:
    """Call ``forget_all()`` after every reconnect of ``state``'s connection, and ``settle_s`` later.

    The changes published while the connection was down never arrive, and a member removed then
    would stay cached (for the membership TTL: still sent to, or still allowed to send). At once,
    inside the reconnect's callback, so no lookup after the reconnect reads the stale cache; and
    again once the cluster's other NATS servers have surely learnt the process's subscriptions
    again (a change published through one of them in between is lost too, like an inbox event:
    ``cluster.inbox_resync``). Each forget costs one directory read per conversation in use.
    """

    def reconnected() -> None:
        forget_all()
        asyncio.get_running_loop().call_later(settle_s, forget_all)

    state.on_reconnect(reconnected)


class NatsInboxes:
    """``Inboxes``, ``InboxPublisher`` and ``LiveConnections`` over core NATS, for any process."""

    def __init__(self, client: Client, *, outbox_limit: int = OUTBOX_LIMIT) -> None:
        self._client = client
        self._outbox: deque[_Event] = deque()
        self._limit = outbox_limit
        self._wake: asyncio.Event | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._closed = False
        self.sent = 0  # events handed to the NATS client (for /metrics)
        self.dropped = 0  # events dropped: outbox full, or refused by the client

    # --- Inboxes ------------------------------------------------------------------------------

    def to_inbox(
        self, user_id: int, payload: bytes, *, only_device: str | None = None, skip_device: str | None = None
    ) -> int:
        """Publish ``payload`` for ``user_id``'s devices on whichever nodes hold them; 0 (none here)."""
        headers: dict[str, str] | None = None
        if only_device is not None:
            headers = {subjects.ONLY_DEVICE: only_device}
        if skip_device is not None:
            headers = (headers or {}) | {subjects.SKIP_DEVICE: skip_device}
        self._send(subjects.inbox(user_id), payload, headers)
        return 0

    # --- InboxPublisher -----------------------------------------------------------------------

    async def publish(self, user_ids: Iterable[int], payload: bytes) -> None:
        """An event for every device of ``user_ids`` (one publish per user)."""
        for user_id in user_ids:
            self._send(subjects.inbox(user_id), payload, None)

    def membership_changed(self, conversation_id: int) -> None:
        """Tell every node to forget what it cached of ``conversation_id``'s members."""
        self._send(subjects.membership_changed(), membership_payload(conversation_id), None)

    # --- LiveConnections ----------------------------------------------------------------------

    async def end_device(self, ended: DeviceEnded) -> None:
        """Tell every broker node to close ``ended.device_id``'s connection, wherever it is."""
        self._send(subjects.device_ended(), ended.to_json(), None)

    # --- the outbox ---------------------------------------------------------------------------

    def _send(self, subject: str, payload: bytes, headers: dict[str, str] | None) -> None:
        if self._closed:
            self._drop(subject, "the outbox is closed")
            return
        outbox = self._outbox
        if len(outbox) >= self._limit:
            self._drop(outbox.popleft()[0], "the outbox is full")
        outbox.append((subject, payload, headers))
        drainer, wake = self._drainer, self._wake
        if drainer is None or wake is None or drainer.done():  # first event, or the drainer died
            if drainer is not None and not drainer.cancelled() and drainer.exception() is not None:
                logger.error("NATS outbox drainer failed; restarting it", exc_info=drainer.exception())
            self._wake = wake = asyncio.Event()
            self._drainer = asyncio.get_running_loop().create_task(self._drain(wake))
        wake.set()

    async def _drain(self, wake: asyncio.Event) -> None:
        outbox, publish = self._outbox, self._client.publish
        while True:
            await wake.wait()
            wake.clear()
            while outbox:
                subject, payload, headers = outbox.popleft()
                try:
                    await publish(subject, payload, headers=headers)
                except (NatsError, OSError) as exc:
                    self._drop(subject, str(exc))
                else:
                    self.sent += 1
            if self._closed:
                return

    def _drop(self, subject: str, reason: str) -> None:
        """Count an event lost; say so once per thousand (a NATS outage drops many at once)."""
        self.dropped += 1
        if self.dropped % 1000 == 1:
            logger.warning("event on %s dropped (%s); %d dropped so far", subject, reason, self.dropped)

    async def close(self) -> None:
        """Hand what is still in the outbox to the client, then stop (the connection is closed apart)."""
        self._closed = True
        drainer = self._drainer
        if drainer is not None and self._wake is not None and not drainer.done():
            self._wake.set()
            await drainer
