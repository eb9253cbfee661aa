"""The notifiers' ``CommittedFeed`` on JetStream: shard leases, a durable consumer per owned shard.

Each conversation shard's persister publishes its commit results on ``hubbub.committed.<shard>``
(stream ``HUBBUB_COMMITTED``). Notifiers share lease group ``notifier`` over the same fixed
conversation shards (``cluster.leases``: balanced over the live notifiers, moved when one dies or
joins). For each shard it owns, a notifier pulls from the shard's durable consumer
``notifier-<shard>`` (one per shard, shared by whoever owns it, so a new owner resumes from the
ack floor), and hands out one batch per fetch. When it loses the shard it stops fetching;
batches already handed out still settle (acking on the shared consumer is harmless, and the
delivery log keeps a redelivery from pushing twice).

Acks and a notifier's death
    A batch is acked when the planner settles it: every push it caused is over. Until then a
    keeper marks its messages in progress every ``ack_wait_s / 3``, so a batch whose pushes wait
    on a provider's backoff is not redelivered while its notifier lives. A notifier killed
    mid-batch stops marking: ``ack_wait_s`` later JetStream redelivers the batch to whoever
    owns the shard by then (the lease moves within ``(1 + 1/3) * lease_ttl_s``), and the
    delivery log skips what was pushed and takes over what the dead notifier had only claimed.
    So pushes resume after a notifier's death within ``max(ack_wait_s, lease move)``, except a
    push the dead notifier had claimed, which waits until its claim is the delivery log's
    ``stale_after_s`` old. ``retry`` (planning failed) naks the batch with a delay.

Backpressure
    At most ``max_in_pipeline`` messages are handed out unsettled; the consumers of the owned
    shards wait for room meanwhile (their fetched batches kept in progress), and the rest stays
    in JetStream. Keep it below the dispatcher's queue, which drops the oldest job when full.

The stream
    Created if absent (file storage, ``replicas`` copies, limits retention with a max age of a
    day by default: the persisters' configuration); a stream someone else created is used as it
    is. Messages that do not decode are terminated (logged), never redelivered forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cluster.committed import ensure_committed_stream
from cluster.leases import ShardLeases
from hubbub import cancelling, subjects
from hubbub.envelope import CommitResult, WireFormatError, decode_commit_result
from hubbub.push_feed import CommittedBatch

__all__ = ["LEASE_GROUP", "NatsCommittedFeed", "durable_name"]

logger = logging.getLogger(__name__)

LEASE_GROUP = "notifier"
_TRANSIENT = (NatsError, TimeoutError, OSError)
_RESTART_DELAY_S = 1.0


def durable_name(shard: int) -> str:
    """The durable consumer of shard ``shard`` on the committed stream (shared by its owners)."""
    return f"notifier-{shard}"


@dataclass(eq=False)
class _NatsBatch:
    """One fetch of a shard's consumer: its results, and the messages to ack together."""

    shard: int
    results: tuple[CommitResult, ...]
    messages: tuple[Msg, ...] = field(repr=False)
    feed: NatsCommittedFeed = field(repr=False)

    def settle(self) -> None:
        """Ack every message of the batch (in a task of the feed's)."""
        self.feed.finish(self, "ack")

    def retry(self, delay_s: float) -> None:
        """Nak every message of the batch, to be delivered again after ``delay_s``."""
        self.feed.finish(self, "nak", delay_s)


class NatsCommittedFeed:
    """Committed results of the shards this notifier holds leases of (``open``, then ``close``)."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        ack_wait_s: float = 30.0,
        batch_size: int = 100,
        max_ack_pending: int = 1_000,
        fetch_timeout_s: float = 5.0,
        queue_size: int = 16,
        max_in_pipeline: int = 5_000,
    ) -> None:
        self._js = js
        self._ack_wait_s = ack_wait_s
        self._batch_size = batch_size
        self._max_ack_pending = max_ack_pending
        self._fetch_timeout_s = fetch_timeout_s
        self._batches: asyncio.Queue[_NatsBatch] = asyncio.Queue(queue_size)
        self._max_in_pipeline = max_in_pipeline
        self._in_pipeline = 0  # messages handed out and not settled yet
        self._room = asyncio.Event()
        self._consumers: dict[int, asyncio.Task[None]] = {}
        self._unsettled: set[_NatsBatch] = set()
        self._all_settled = asyncio.Event()
        self._all_settled.set()
        self._stopping: set[asyncio.Task[None]] = set()  # consumers of lost shards, unwinding
        self._acks: set[asyncio.Task[None]] = set()
        self._keeper: asyncio.Task[None] | None = None
        self.leases: ShardLeases | None = None
        self.fetched = 0  # messages handed out, for /metrics
        self.polls: dict[int, int] = {}  # fetches returned per shard (even empty): /healthz sees them move

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        *,
        owner_id: str,
        shards: int,
        replicas: int,
        lease_ttl_s: float,
        ack_wait_s: float = 30.0,
        batch_size: int = 100,
        fetch_timeout_s: float = 5.0,
        max_in_pipeline: int = 5_000,
        group: str = LEASE_GROUP,
    ) -> NatsCommittedFeed:
        """Ensure the stream, join lease ``group`` and consume the shards it gives us.

        ``max_in_pipeline`` bounds the messages handed out and not yet settled: keep it below the
        dispatcher's ``queue_size`` so that queue never drops a job under load.
        """
        await ensure_committed_stream(js, replicas)
        feed = cls(
            js,
            ack_wait_s=ack_wait_s,
            batch_size=batch_size,
            fetch_timeout_s=fetch_timeout_s,
            max_in_pipeline=max_in_pipeline,
        )
        feed.leases = await ShardLeases.open(
            js,
            group=group,
            replicas=replicas,
            owner_id=owner_id,
            shards=shards,
            ttl_s=lease_ttl_s,
            on_gained=feed.gained,
            on_lost=feed.lost,
        )
        feed.start()
        await feed.leases.start()
        return feed

    def start(self) -> None:
        """Start marking unsettled batches in progress (``open`` calls it).

        When the leases are composed elsewhere, call it, then pass ``gained`` and ``lost`` as the
        lease group's callbacks.
        """
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep_in_progress(), name="push-feed-keeper")

    async def close(self, *, release: bool = True) -> None:
        """Stop consuming; with ``release``, hand every shard back at once (a graceful stop).

        The leases are stopped here only if ``open`` made them (``leases`` set).
        """
        if self.leases is not None:
            await self.leases.stop(release=release)
        for shard in list(self._consumers):
            self.lost(shard, 0)
        if self._keeper is not None:
            cancelling.cancel(self._keeper)
        await asyncio.gather(
            *self._stopping, *self._acks, *filter(None, [self._keeper]), return_exceptions=True
        )

    @property
    def healthy(self) -> bool:
        """The keeper and every gained shard's consumer run (and the lease loop, if ours)."""
        if self._keeper is None or self._keeper.done():
            return False
        if self.leases is not None and not self.leases.running:
            return False
        return all(not consumer.done() for consumer in self._consumers.values())

    # -- the feed ----------------------------------------------------------------------------

    async def next_batch(self) -> CommittedBatch:
        """The next fetched batch of any owned shard (waits for one)."""
        return await self._batches.get()

    def finish(self, batch: _NatsBatch, how: str, delay_s: float = 0.0) -> None:
        """Ack (``"ack"``) or nak (``"nak"``) a batch's messages, in a task; once per batch."""
        if batch not in self._unsettled:
            return
        self._unsettled.discard(batch)
        self._in_pipeline -= len(batch.messages)
        self._room.set()
        self._spawn(self._finish(batch, how, delay_s), f"push-feed-{how}-{batch.shard}")

    async def wait_settled(self) -> None:
        """Wait until every batch handed out so far is settled and its acks are sent."""
        while self._unsettled or self._acks:
            self._all_settled.clear()
            await self._all_settled.wait()

    async def _finish(self, batch: _NatsBatch, how: str, delay_s: float) -> None:
        for message in batch.messages:
            try:
                if how == "ack":
                    await message.ack()
                else:
                    await message.nak(delay=delay_s)
            except _TRANSIENT as exc:  # JetStream redelivers it; the delivery log skips what was pushed
                logger.warning("%s of a committed message of shard %d failed (%r)", how, batch.shard, exc)

    # -- leases -------------------------------------------------------------------------------

    def gained(self, shard: int, epoch: int) -> None:
        """Start consuming ``shard`` (called by the lease loop: must not block)."""
        logger.info("notifier consumes committed shard %d (epoch %d)", shard, epoch)
        self._consumers[shard] = asyncio.create_task(self._supervise(shard), name=f"push-feed-shard-{shard}")

    def lost(self, shard: int, epoch: int) -> None:
        """Stop fetching ``shard``; batches handed out still settle."""
        task = self._consumers.pop(shard, None)
        if task is not None:
            logger.info("notifier stops consuming committed shard %d (epoch %d)", shard, epoch)
            cancelling.cancel(task)
            self._stopping.add(task)  # awaited by close
            task.add_done_callback(self._stopping.discard)

    async def _supervise(self, shard: int) -> None:
        while True:
            try:
                await self._consume(shard)
            except _TRANSIENT as exc:  # NATS failing over or reconnecting: try again shortly
                logger.warning("committed consumer of shard %d failed (%r); restarting", shard, exc)
            except Exception:
                logger.exception("committed consumer of shard %d ended; restarting", shard)
            await asyncio.sleep(_RESTART_DELAY_S)

    async def _consume(self, shard: int) -> None:
        subscription = await self._js.pull_subscribe(
            subjects.committed(shard),
            durable=durable_name(shard),
            stream=subjects.COMMITTED_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self._ack_wait_s,
                max_ack_pending=self._max_ack_pending,
                max_deliver=-1,
            ),
        )
        try:
            while True:
                try:
                    messages = await subscription.fetch(self._batch_size, timeout=self._fetch_timeout_s)
                except (NatsTimeoutError, TimeoutError):
                    messages = []
                self.polls[shard] = self.polls.get(shard, 0) + 1
                if messages:
                    await self._hand_out(shard, messages)
        finally:
            with contextlib.suppress(*_TRANSIENT):
                await subscription.unsubscribe()

    async def _hand_out(self, shard: int, messages: Sequence[Msg]) -> None:
        results: list[CommitResult] = []
        kept: list[Msg] = []
        for message in messages:
            try:
                results.append(decode_commit_result(message.data))
            except WireFormatError as exc:
                logger.error("dropping a malformed committed message of shard %d: %s", shard, exc)  # noqa: TRY400
                with contextlib.suppress(*_TRANSIENT):
                    await message.term()
            else:
                kept.append(message)
        if not kept:
            return
        batch = _NatsBatch(shard, tuple(results), tuple(kept), self)
        self._unsettled.add(batch)  # kept in progress from now on, even while it waits here
        counted = False
        try:
            # Backpressure: while the pipeline holds this many unsettled messages, the rest wait
            # in JetStream, so the dispatcher's queue (which drops the oldest when full) never fills.
            while self._in_pipeline and self._in_pipeline + len(kept) > self._max_in_pipeline:
                self._room.clear()
                await self._room.wait()
            self._in_pipeline += len(kept)
            counted = True
            await self._batches.put(batch)
        except asyncio.CancelledError:  # the shard was lost: JetStream redelivers it to the next owner
            self._unsettled.discard(batch)
            if counted:
                self._in_pipeline -= len(kept)
            self._check_settled()
            raise
        self.fetched += len(kept)

    async def _keep_in_progress(self) -> None:
        while True:
            await asyncio.sleep(self._ack_wait_s / 3)
            for batch in list(self._unsettled):
                for message in batch.messages:
                    try:
                        await message.in_progress()
                    except _TRANSIENT as exc:
                        logger.warning("marking a committed message in progress failed (%r)", exc)
                        break

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._acks.add(task)
        task.add_done_callback(self._acked)

    def _acked(self, task: asyncio.Task[None]) -> None:
        self._acks.discard(task)
        self._check_settled()

    def _check_settled(self) -> None:
        if not self._unsettled and not self._acks:
            self._all_settled.set()
