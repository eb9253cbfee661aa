"""What a persister hands on after a commit: the committed stream, and replies to REST submitters.

The committed stream ``HUBBUB_COMMITTED``
    Each commit result is published to ``hubbub.committed.<shard>`` for the notifiers (one per
    message, ``Nats-Msg-Id`` = ``subjects.committed_msg_id``, so the same (conversation, seq)
    published again by a redelivered batch or by a stale owner is stored once within the
    duplicate window). Limits retention with a max age (a day by default), not work-queue:
    consumers other than the notifiers may read it (metrics, a future search indexer, a
    notifier that re-reads after a crash from its own ack floor), and a push older than a day is
    worthless, so the stream is a bounded recent log rather than a queue that grows while no
    notifier runs. File storage and ``replicas`` copies as the accepted stream.

Replies
    A REST submit made in another process (``hubbub api``) named its reply subject in the
    accepted message's ``Hubbub-Reply-To`` header; the persister answers there (core NATS,
    at most once) with the commit results of the batch for that process, as a JSON array
    (``hubbub.envelope.encode_commit_results``). ``ReplyListener`` is the other end: it
    subscribes to the process's reply subject and hands the results to its callback (the
    launcher passes ``MessagingCore.commit_replied``). A reply lost on the way leaves the REST
    caller to its submit time-out (503), and its resend is answered as a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import Header, RetentionPolicy, StorageType, StreamConfig, StreamInfo

from cluster.streams import ensure_stream
from hubbub import subjects
from hubbub.envelope import (
    CommitResult,
    WireFormatError,
    decode_commit_results,
    encode_commit_result,
    encode_commit_results,
)
from hubbub.shards import ShardMap

__all__ = [
    "CommitReplier",
    "CommittedPublisher",
    "ReplyListener",
    "committed_stream_config",
    "ensure_committed_stream",
]

logger = logging.getLogger(__name__)

COMMITTED_MAX_AGE_S = 86_400.0
_DUPLICATE_WINDOW_S = 120.0


def committed_stream_config(replicas: int, max_age_s: float = COMMITTED_MAX_AGE_S) -> StreamConfig:
    """The ``HUBBUB_COMMITTED`` stream (see the module docstring for each choice)."""
    return StreamConfig(
        name=subjects.COMMITTED_STREAM,
        description="Hubbub: committed messages per conversation shard, for the notifiers",
        subjects=[subjects.every_committed()],
        retention=RetentionPolicy.LIMITS,
        max_age=max_age_s,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=_DUPLICATE_WINDOW_S,
    )


async def ensure_committed_stream(js: JetStreamContext, replicas: int) -> StreamInfo:
    """Create ``HUBBUB_COMMITTED`` if absent (the persisters and the notifiers call this)."""
    return await ensure_stream(js, committed_stream_config(replicas))


class CommittedPublisher:
    """Publishes commit results to the committed stream; raises if JetStream did not take them all.

    Composed into the persister's ``on_committed``: a failure there makes the batch come again
    (it is not acked), and the redelivered messages publish the same ids, deduplicated.
    """

    def __init__(self, js: JetStreamContext, shards: ShardMap, *, timeout_s: float = 5.0) -> None:
        self._js = js
        self._shards = shards
        self._timeout_s = timeout_s
        self.published = 0  # for /metrics

    async def publish(self, results: Sequence[CommitResult]) -> None:
        """Every result on its shard's committed subject, concurrently; all stored when this returns."""
        await asyncio.gather(*(self._publish_one(result) for result in results))
        self.published += len(results)

    async def _publish_one(self, result: CommitResult) -> None:
        message = result.message
        await self._js.publish(
            subjects.committed(self._shards.conversation(message.conversation_id)),
            encode_commit_result(result),
            timeout=self._timeout_s,
            stream=subjects.COMMITTED_STREAM,
            headers={Header.MSG_ID.value: subjects.committed_msg_id(message.conversation_id, message.seq)},
        )


class CommitReplier:
    """Answers REST submitters elsewhere: the results of a batch, grouped by reply subject."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def reply(self, results: Sequence[CommitResult], reply_to: Iterable[str | None]) -> None:
        """Send each result to its message's reply subject (``None``: nobody waits elsewhere)."""
        grouped: dict[str, list[CommitResult]] = {}
        for result, subject in zip(results, reply_to, strict=True):
            if subject is not None:
                grouped.setdefault(subject, []).append(result)
        for subject, answered in grouped.items():
            try:
                await self._client.publish(subject, encode_commit_results(answered))
            except NatsError as exc:  # at most once: the caller's time-out answers it
                logger.warning("replying %d commit results failed: %r", len(answered), exc)


class ReplyListener:
    """This process's reply subject: commit results of the REST sends it made, to ``on_results``."""

    def __init__(
        self, client: Client, process_id: str, on_results: Callable[[Sequence[CommitResult]], None]
    ) -> None:
        self.subject = subjects.reply(process_id)
        self._client = client
        self._on_results = on_results
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        """Subscribe (before the first submit, so no reply comes too early)."""
        self._subscription = await self._client.subscribe(self.subject, cb=self._received)

    async def stop(self) -> None:
        """Unsubscribe."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await subscription.unsubscribe()

    async def _received(self, msg: Msg) -> None:
        try:
            results = decode_commit_results(msg.data)
        except WireFormatError as exc:
            logger.warning("dropped a malformed commit reply on %s: %s", self.subject, exc)
            return
        self._on_results(results)
