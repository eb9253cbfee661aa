"""The messaging core: everything chat-shaped between the MQTT server and the persister.

``MessagingCore`` composes ingest (``ingest.py``), fan-out (``fanout.py``), presence
(``presence.py`` with the last-active writer, or a cluster's ``PresenceService``), the
membership cache (``membership.py``) and device notices, behind the Protocols its neighbours use:

- the MQTT server reports to it as ``DeviceEvents`` and is driven through
  ``DeviceConnections`` (both in ``hubbub/connections.py``);
- the API uses it as ``InboxPublisher``, ``MessageSubmitter`` and ``PresenceView``
  (``hubbub/stores.py``);
- the persister hands it what it committed (``committed``) and what it failed to commit
  (``commit_failed``), and the notifier asks it who is in a conversation (``members``) and
  who is online (``online``);
- in a cluster, a process whose REST sends were committed by a persister elsewhere hands it
  the results replied to it (``commit_replied``): they wake the waiting senders only, since
  the persister fans the events out itself.

A message's way through it: ``send`` -> ``Ingest.receive`` (validate, rate, membership,
id) -> the ``AcceptedLog`` (``hubbub.handoffs``) ... ``committed`` -> ``fan_out`` ->
``DeviceConnections.to_inbox``.
Nothing here knows MQTT or SQL; every clock is the injected ``Clock``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Collection, Iterable, Sequence

from hubbub.connections import DeviceConnections
from hubbub.envelope import AcceptedMessage, CommitResult, SendRequest
from hubbub.errors import MessageRejected, Unavailable
from hubbub.events import error_event
from hubbub.handoffs import AcceptedLog
from hubbub.ids import SnowflakeGenerator
from hubbub.presence import PresenceService
from hubbub.sessions import DeviceEnded
from hubbub.stores import Directory
from messaging.clock import Clock
from messaging.fanout import fan_out
from messaging.ingest import Ingest, IngestLimits
from messaging.membership import MembershipCache
from messaging.presence import LocalPresence

__all__ = ["MessagingCore"]

logger = logging.getLogger(__name__)

_UNAVAILABLE = "the message could not be stored now; resend it (same cmid) later"
_Key = tuple[int, int, str]  # conversation_id, sender_id, cmid


class MessagingCore:
    """Ingest, fan-out, presence, membership, device notices and last activity, without transport."""

    def __init__(
        self,
        *,
        connections: DeviceConnections,
        directory: Directory,
        accepted: AcceptedLog,
        ids: SnowflakeGenerator,
        limits: IngestLimits,
        presence_grace_s: float,
        clock: Clock,
        presence: PresenceService | None = None,
    ) -> None:
        self._connections = connections
        self._directory = directory
        self._membership = MembershipCache(directory, clock, limits.membership_ttl_s)
        self._ingest = Ingest(self._membership, accepted, ids, limits, connections=connections, clock=clock)
        # One node decides presence itself; a cluster node reports to the shard's writer.
        self._presence = (
            presence
            if presence is not None
            else LocalPresence(
                grace_s=presence_grace_s, connections=connections, directory=directory, clock=clock
            )
        )
        self._notices: dict[str, tuple[int, bytes]] = {}
        # REST sends waiting for their commit: failed with ``Unavailable`` if it fails.
        self._submitting: dict[_Key, list[asyncio.Future[CommitResult]]] = {}
        self._closed = False

    # --- DeviceEvents: what the MQTT server reports ------------------------------------------

    def device_connected(self, user_id: int, device_id: str) -> None:
        """A device is online."""
        if not self._closed:
            self._presence.device_connected(user_id, device_id)

    def device_disconnected(self, user_id: int, device_id: str) -> None:
        """A device's connection ended."""
        if not self._closed:
            self._presence.device_disconnected(user_id, device_id)

    def send(
        self, user_id: int, device_id: str, conversation_id: int, payload: bytes
    ) -> Awaitable[None] | None:
        """A device's message: ingest (``None`` when handled at once)."""
        return self._ingest.receive(user_id, device_id, conversation_id, payload)

    def typing(self, user_id: int, device_id: str, conversation_id: int) -> Awaitable[None] | None:
        """A device's typing notice: to the other members."""
        return self._ingest.typing(user_id, device_id, conversation_id)

    def inbox_subscribed(self, user_id: int, device_id: str) -> None:
        """A returning device subscribed to its inbox: hand it its pending notice."""
        notice = self._notices.pop(device_id, None)
        if notice is not None and notice[0] == user_id:
            self._connections.to_inbox(user_id, notice[1], only_device=device_id)

    async def presence_snapshot(self, user_id: int) -> bytes:
        """Presence for a topic with no retained state (``PresenceService.snapshot``)."""
        return await self._presence.snapshot(user_id)

    # --- InboxPublisher, MessageSubmitter, PresenceView: what the API uses ---------------------

    async def publish(self, user_ids: Iterable[int], payload: bytes) -> None:
        """``InboxPublisher``: an event for every device of ``user_ids``."""
        to_inbox = self._connections.to_inbox
        for user_id in user_ids:
            to_inbox(user_id, payload)

    def membership_changed(self, conversation_id: int) -> None:
        """``InboxPublisher``: forget the cached members of ``conversation_id``."""
        self._membership.forget(conversation_id)

    async def submit(
        self, conversation_id: int, sender_id: int, device_id: str, request: SendRequest
    ) -> CommitResult:
        """``MessageSubmitter``: send through ingest and wait for the commit.

        Raises ``Unavailable`` (a 503 with ``Retry-After``) as soon as the commit fails.
        """
        key = (conversation_id, sender_id, request.cmid)
        failed: asyncio.Future[CommitResult] = asyncio.get_running_loop().create_future()
        self._submitting.setdefault(key, []).append(failed)
        sending = asyncio.ensure_future(self._ingest.submit(conversation_id, sender_id, device_id, request))
        try:
            await asyncio.wait((sending, failed), return_when=asyncio.FIRST_COMPLETED)
            return sending.result() if sending.done() else failed.result()
        finally:
            sending.cancel()
            if not failed.cancel() and not failed.cancelled():
                failed.exception()  # seen, if the send finished first: no "never retrieved" warning
            waiting = self._submitting.get(key, [])
            if failed in waiting:
                waiting.remove(failed)
            if not waiting:
                self._submitting.pop(key, None)

    def online(self, user_ids: Collection[int]) -> set[int]:
        """``PresenceView``: users with a connected device (on this node, or in the cluster)."""
        return self._presence.online(user_ids)

    # --- the pipeline: persister and notifier ----------------------------------------------

    async def committed(self, results: Sequence[CommitResult]) -> None:
        """The persister committed ``results``: wake REST senders, deliver the events."""
        self._ingest.committed(results)
        await fan_out(results, self._membership.members, self._connections)

    def commit_replied(self, results: Sequence[CommitResult]) -> None:
        """Results of REST sends made here, committed (and fanned out) by a persister elsewhere."""
        self._ingest.committed(results)

    def commit_failed(self, batch: Sequence[AcceptedMessage], retry_after_ms: int) -> None:
        """The persister could not commit ``batch``: tell each sender's device to resend later.

        MQTT senders get an ``error`` event ``unavailable`` with the hint, for each message,
        at once rather than after their resend timer; REST senders get a 503. Nothing of the
        batch was stored or acknowledged, and a resend keeps its cmid, so it is stored once.
        """
        retry_after_s = max(1, math.ceil(retry_after_ms / 1000))
        for message in batch:
            key = (message.conversation_id, message.sender_id, message.cmid)
            for waiter in self._submitting.pop(key, []):
                if not waiter.done():
                    waiter.set_exception(Unavailable(_UNAVAILABLE, retry_after=retry_after_s))
            rejection = MessageRejected("unavailable", _UNAVAILABLE, retry_after_ms=retry_after_ms)
            self._connections.to_inbox(
                message.sender_id,
                error_event(message.conversation_id, message.cmid, rejection),
                only_device=message.sender_device_id,
            )

    async def members(self, conversation_id: int) -> frozenset[int] | None:
        """Members of ``conversation_id`` (cached), ``None`` if it does not exist."""
        return await self._membership.members(conversation_id)

    def notify_device(self, user_id: int, device_id: str, payload: bytes) -> None:
        """Tell one device something now, or when it next subscribes to its inbox.

        Used when a push service rejected the device's token: the device, offline by
        definition, must hear it on its return. Kept in memory (one notice per device);
        the REST state says the same after a restart.
        """
        if self._connections.to_inbox(user_id, payload, only_device=device_id) == 0:
            self._notices[device_id] = (user_id, payload)

    async def end_device(self, ended: DeviceEnded) -> None:
        """``LiveConnections``: a device was signed out for good; close its connection now.

        The account store no longer holds it, so the broker refuses its next CONNECT; a notice
        kept for its return would never be read.
        """
        logger.info("closing device_id=%s: %s", ended.device_id, ended.reason)
        self._notices.pop(ended.device_id, None)
        self._connections.drop(ended.device_id)

    async def close(self) -> None:
        """Stop deciding presence and store the last activity still pending (at shutdown)."""
        self._closed = True
        await self._presence.close()

    def memberships_lost(self) -> None:
        """Forget every cached membership: changes may have been missed (a cluster's NATS gap)."""
        self._membership.forget_all()
