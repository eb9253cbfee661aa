"""The accepted-messages stream: ingest's ``AcceptedLog`` in a cluster (``hubbub.handoffs``).

Ingest publishes each accepted message to JetStream on ``hubbub.accepted.<conversation shard>``
and the device's PUBACK waits for the stream's ack: from then on the message survives the death
of the broker node and of any one NATS server (three replicas). The shard's persister reads it
(``cluster.intake``).

The stream ``HUBBUB_ACCEPTED``
    File storage, ``replicas`` copies (3 in a cluster; 1 for a single NATS server). Work-queue
    retention: a message is removed once its shard's persister acked it, which it does only after
    the commit and what follows (committed stream, fan-out, replies), so the stream holds exactly
    the accepted-but-not-yet-handed-on backlog and its size follows the persisters' lag, not the
    traffic. History lives in the message store; keeping a copy here (limits retention) would
    only cost disk. Work-queue retention allows one consumer per subject, which is the design:
    one durable pull consumer per shard (``subjects.accepted_consumer``), read by the shard's
    lease holder, so a shard is committed by one writer in stream order.

Deduplication
    ``Nats-Msg-Id`` is ``subjects.accepted_msg_id`` with the ``message_id`` of this send as the
    attempt: a publish whose ack was lost (a timeout during a NATS leader election) is retried
    with the same id and dropped by the stream if it was stored after all. A device's resend of
    the same cmid is a new attempt on purpose: it must reach the persister, whose store answers it
    as a duplicate with the stored message, and that answer is the ``ack`` event the device is
    waiting for (a resend dropped by NATS would wait for an ack nobody sends, until the duplicate
    window passed). The store's unique (conversation, sender, cmid) is what makes a message stored
    once. The duplicate window (2 minutes) outlasts the publish retries by far.

``Hubbub-Reply-To``
    A process that submits on a REST caller's behalf passes ``reply_to`` (its
    ``subjects.reply`` subject); offers made with ``reply=True`` carry it, and the persister
    answers the commit result there (``cluster.committed.CommitReplier``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import Header, RetentionPolicy, StorageType, StreamConfig, StreamInfo

from cluster.streams import ensure_stream
from hubbub import subjects
from hubbub.envelope import AcceptedMessage, encode_accepted
from hubbub.errors import Unavailable
from hubbub.shards import ShardMap

__all__ = ["DUPLICATE_WINDOW_S", "NatsAcceptedLog", "accepted_stream_config", "ensure_accepted_stream"]

logger = logging.getLogger(__name__)

DUPLICATE_WINDOW_S = 120.0
_RETRY_PAUSE_S = 0.05
_UNAVAILABLE = "the cluster cannot take messages now; resend it (same cmid) shortly"


def accepted_stream_config(replicas: int) -> StreamConfig:
    """The ``HUBBUB_ACCEPTED`` stream (see the module docstring for each choice)."""
    return StreamConfig(
        name=subjects.ACCEPTED_STREAM,
        description="Hubbub: messages ingest accepted, until their shard's persister committed them",
        subjects=[subjects.every_accepted()],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
    )


async def ensure_accepted_stream(js: JetStreamContext, replicas: int) -> StreamInfo:
    """Create ``HUBBUB_ACCEPTED`` if absent (every process that publishes or reads it calls this)."""
    return await ensure_stream(js, accepted_stream_config(replicas))


class NatsAcceptedLog:
    """``AcceptedLog`` on JetStream: ``offer`` finishes once the stream holds the message.

    ``publish_timeout_s`` bounds the whole offer, retries included (a NATS server's death makes
    its streams unwritable until the others elect a leader, seconds on 2.9): past it the offer
    raises ``Unavailable`` and the device hears ``unavailable`` and resends.
    """

    def __init__(
        self,
        js: JetStreamContext,
        shards: ShardMap,
        *,
        reply_to: str | None = None,
        publish_timeout_s: float = 10.0,
        attempt_timeout_s: float = 2.0,
    ) -> None:
        self._js = js
        self._shards = shards
        self._reply_to = reply_to
        self._publish_timeout_s = publish_timeout_s
        self._attempt_timeout_s = attempt_timeout_s
        self.published = 0  # for /metrics
        self.failed = 0

    def offer(self, message: AcceptedMessage, *, reply: bool = False) -> Coroutine[Any, Any, None]:
        """Publish ``message`` (with the reply subject when ``reply``); awaited, it ends once stored."""
        return self._publish(message, reply)

    async def _publish(self, message: AcceptedMessage, reply: bool) -> None:
        headers: dict[str, str] = {
            Header.MSG_ID.value: subjects.accepted_msg_id(
                message.conversation_id, message.sender_id, message.cmid, message.message_id
            )
        }
        if reply and self._reply_to is not None:
            headers[subjects.REPLY_TO] = self._reply_to
        subject = subjects.accepted(self._shards.conversation(message.conversation_id))
        payload = encode_accepted(message)
        deadline = time.monotonic() + self._publish_timeout_s
        while True:
            try:
                await self._js.publish(
                    subject,
                    payload,
                    timeout=min(self._attempt_timeout_s, max(0.001, deadline - time.monotonic())),
                    stream=subjects.ACCEPTED_STREAM,
                    headers=dict(headers),  # the client adds to it
                )
            except (NatsError, TimeoutError) as exc:
                if time.monotonic() + _RETRY_PAUSE_S < deadline:
                    logger.debug("publishing an accepted message failed (%r); retrying", exc)
                    await asyncio.sleep(_RETRY_PAUSE_S)
                    continue
                self.failed += 1
                logger.warning("JetStream did not take an accepted message: %r", exc)
                raise Unavailable(_UNAVAILABLE, retry_after=1) from exc
            self.published += 1
            return
