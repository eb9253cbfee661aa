"""Ingest: the edge where a device's message is checked, stamped and handed to the persister.

Checks, in order: the payload (JSON ``{"cmid", "text"}``, text only, non-empty, at most
``max_chars`` characters), the sender's rate, membership. A failure becomes an ``error``
event for the sending device and nothing else happens. An accepted message gets its
Snowflake ``message_id``, the ``sender_id`` of the authenticated session (never of the
payload) and ``created_at``, and is offered to the ``AcceptedLog`` (``hubbub.handoffs``): the
persister's queue on one node, JetStream in a cluster.

Membership comes from the ``MembershipCache``: when it is cached and the log takes the message
at once (one node's queue with room), as it is for nearly every message, a send is handled
without any coroutine. In a cluster the send finishes when JetStream acknowledged the message,
so the device's PUBACK means "held by the cluster"; a log that cannot hold it (``Unavailable``)
becomes an ``unavailable`` error event and the device resends later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import orjson

from hubbub.connections import DeviceConnections
from hubbub.envelope import AcceptedMessage, CommitResult, SendRequest, parse_send
from hubbub.errors import MessageRejected, Unavailable
from hubbub.events import error_event, typing_event
from hubbub.handoffs import AcceptedLog
from hubbub.ids import SnowflakeGenerator
from messaging.clock import Clock
from messaging.membership import UNKNOWN, MembershipCache

__all__ = ["Ingest", "IngestLimits", "TokenBucket"]

logger = logging.getLogger(__name__)

_CACHE_LIMIT = 100_000  # rate buckets per node before pruning
_UNAVAILABLE_RETRY_MS = 1_000
_NOT_COMMITTED = "the message was not committed in time; resend it (same cmid) to learn its fate"


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """Edge limits: text length and each device's send rate (a token bucket)."""

    max_chars: int
    sends_per_second: float
    send_burst: int
    typing_per_second: float = 1.0
    typing_burst: int = 3
    membership_ttl_s: float = 30.0
    submit_timeout_s: float = 10.0


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; one token per message."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float) -> bool:
        """Spend a token if one is there."""
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def _prune(buckets: dict[str, TokenBucket]) -> None:
    """Forget every device's bucket once there are too many.

    A fresh bucket starts full, so the worst a device gains is one extra burst.
    """
    if len(buckets) >= _CACHE_LIMIT:
        buckets.clear()


def _best_effort_cmid(payload: bytes) -> str | None:
    """The cmid of a rejected payload, when there is one to name in the error event."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    cmid = body.get("cmid") if isinstance(body, dict) else None
    return cmid if isinstance(cmid, str) and len(cmid) <= 64 else None  # noqa: PLR2004 - MAX_CMID_LENGTH


class Ingest:
    """Validates, stamps and queues messages; also serves REST sends (``MessageSubmitter``)."""

    def __init__(
        self,
        membership: MembershipCache,
        accepted: AcceptedLog,
        ids: SnowflakeGenerator,
        limits: IngestLimits,
        *,
        connections: DeviceConnections,
        clock: Clock,
    ) -> None:
        self._membership = membership
        self._accepted = accepted
        self._ids = ids
        self._limits = limits
        self._connections = connections
        self._now = clock.monotonic  # bound once: read on every send
        self._wall_ms = clock.wall_ms
        self._buckets: dict[str, TokenBucket] = {}
        self._typing_buckets: dict[str, TokenBucket] = {}
        self._waiting: dict[tuple[int, int, str], list[asyncio.Future[CommitResult]]] = {}

    def receive(
        self, sender_id: int, device_id: str, conversation_id: int, payload: bytes
    ) -> Awaitable[None] | None:
        """A device published ``payload`` to ``conv/{conversation_id}/send``.

        Handled at once (``None``) when the membership is cached and the accepted log takes
        the message at once, as it does for nearly every message on one node; otherwise the
        awaitable finishes it (in a cluster: once JetStream holds it). Either way a rejection
        becomes an ``error`` event for the device, and so does a log that cannot hold it now.
        """
        try:
            request = parse_send(payload, self._limits.max_chars)
            later = self._admit(conversation_id, sender_id, device_id, request)
        except MessageRejected as rejection:
            self._reject(conversation_id, _best_effort_cmid(payload), device_id, sender_id, rejection)
            return None
        return (
            None
            if later is None
            else self._finish(later, conversation_id, request.cmid, sender_id, device_id)
        )

    async def _finish(
        self, later: Awaitable[None], conversation_id: int, cmid: str, sender_id: int, device_id: str
    ) -> None:
        try:
            await later
        except MessageRejected as rejection:
            self._reject(conversation_id, cmid, device_id, sender_id, rejection)
        except Unavailable as exc:
            retry_ms = _UNAVAILABLE_RETRY_MS if exc.retry_after is None else exc.retry_after * 1000
            unavailable = MessageRejected("unavailable", exc.message, retry_after_ms=retry_ms)
            self._reject(conversation_id, cmid, device_id, sender_id, unavailable)

    def _reject(
        self,
        conversation_id: int,
        cmid: str | None,
        device_id: str,
        sender_id: int,
        rejection: MessageRejected,
    ) -> None:
        logger.info(
            "rejected cid=%s cmid=%s device_id=%s: %s", conversation_id, cmid, device_id, rejection.code
        )
        self._connections.to_inbox(
            sender_id, error_event(conversation_id, cmid, rejection), only_device=device_id
        )

    async def typing(self, sender_id: int, device_id: str, conversation_id: int) -> None:
        """A device says its user is typing: tell the other members (never stored)."""
        now = self._now()
        bucket = self._typing_buckets.get(device_id)
        if bucket is None:
            _prune(self._typing_buckets)
            bucket = self._typing_buckets[device_id] = TokenBucket(
                self._limits.typing_per_second, self._limits.typing_burst, now
            )
        if not bucket.take(now):
            return  # typing notices are hints: extra ones are dropped, not answered
        members = await self._membership.members(conversation_id)
        if members is None or sender_id not in members:
            logger.info("typing refused cid=%s device_id=%s: not a member", conversation_id, device_id)
            return
        event = typing_event(conversation_id, sender_id)
        for member in members:
            if member != sender_id:
                self._connections.to_inbox(member, event)

    async def submit(
        self, conversation_id: int, sender_id: int, device_id: str, request: SendRequest
    ) -> CommitResult:
        """Send on behalf of a REST caller and wait for the commit (``MessageSubmitter``).

        ``Unavailable`` (a 503) when no result came within ``submit_timeout_s``: in a cluster a
        commit that fails is retried from the stream rather than reported, so the caller's
        resend with the same cmid answers whether it was stored.
        """
        key = (conversation_id, sender_id, request.cmid)
        waiter: asyncio.Future[CommitResult] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(waiter)
        try:
            later = self._admit(conversation_id, sender_id, device_id, request, reply=True)
            if later is not None:
                await later
            try:
                return await asyncio.wait_for(waiter, self._limits.submit_timeout_s)
            except TimeoutError as exc:  # in a cluster a failed commit is retried, not reported
                raise Unavailable(_NOT_COMMITTED, retry_after=1) from exc
        finally:
            waiters = self._waiting.get(key, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiting.pop(key, None)

    def committed(self, results: Sequence[CommitResult]) -> None:
        """Wake the REST callers waiting for these messages (committed here, or replied from elsewhere)."""
        if not self._waiting:
            return
        for result in results:
            message = result.message
            for waiter in self._waiting.pop((message.conversation_id, message.sender_id, message.cmid), []):
                if not waiter.done():
                    waiter.set_result(result)

    def _admit(
        self,
        conversation_id: int,
        sender_id: int,
        device_id: str,
        request: SendRequest,
        *,
        reply: bool = False,
    ) -> Awaitable[None] | None:
        """Rate, membership, stamp, offer; raises ``MessageRejected``. See ``receive`` for the result."""
        now = self._now()
        bucket = self._buckets.get(device_id)
        if bucket is None:
            _prune(self._buckets)
            bucket = self._buckets[device_id] = TokenBucket(
                self._limits.sends_per_second, self._limits.send_burst, now
            )
        if not bucket.take(now):
            raise MessageRejected("rate_limited", "sending too fast; slow down and resend")
        members = self._membership.cached(conversation_id, now)
        if members is UNKNOWN:
            return self._admit_later(conversation_id, sender_id, device_id, request, reply)
        return self._accepted.offer(
            self._stamp(conversation_id, members, sender_id, device_id, request), reply=reply
        )

    async def _admit_later(
        self, conversation_id: int, sender_id: int, device_id: str, request: SendRequest, reply: bool
    ) -> None:
        members = await self._membership.members(conversation_id)
        later = self._accepted.offer(
            self._stamp(conversation_id, members, sender_id, device_id, request), reply=reply
        )
        if later is not None:
            await later

    def _stamp(
        self,
        conversation_id: int,
        members: frozenset[int] | None,
        sender_id: int,
        device_id: str,
        request: SendRequest,
    ) -> AcceptedMessage:
        if members is None or sender_id not in members:
            # One answer for "no such conversation" and "not yours": it reveals nothing.
            raise MessageRejected("not_member", "not a member of this conversation")
        return AcceptedMessage(
            conversation_id=conversation_id,
            message_id=self._ids.next_id(),
            sender_id=sender_id,
            sender_device_id=device_id,
            cmid=request.cmid,
            text=request.text,
            created_at_ms=self._wall_ms(),
        )
