"""A persister's intake in a cluster: the accepted stream's shards it holds leases on, as fenced batches.

``ShardIntake`` is the ``AcceptedSource`` (``hubbub.handoffs``) of ``hubbub persister`` when
it runs with NATS. It is driven by ``cluster.leases.ShardLeases`` of group ``persister``
(pass ``shard_gained`` / ``shard_lost`` as its callbacks):

Gaining shard n under epoch e
    1. Fence the store with ``Fence(n, e)`` (``fence_store``, when the store can be fenced
       ahead of its first commit; otherwise the first commit carrying the fence takes over).
       A stale owner's commit is refused from then on: the store, not the lease, is the guard.
    2. Make the shard's durable push consumer (``subjects.accepted_consumer(n)``) anew: delete
       it, then add it delivering to a fresh inbox of this process everything the stream still
       holds for ``hubbub.accepted.n``. The stream is a work queue, so what it still holds is
       exactly what no owner acked: the new owner resumes from the ack floor at once, in stream
       order, including what the previous owner had received but not acked (binding the old
       consumer would leave those to its ack wait, and commit newer messages first), and a
       stale owner's subscription receives nothing more. The consumer's description names the
       epoch that made it, so a stale owner that binds again finds it is not its own and stops.
    3. Hand what arrives to the persister (``next_batch``) with ``Fence(n, e)``: each batch is
       the first message pushed and whatever arrived with it. A push consumer, not a pull:
       nats-py's fetch of a batch waits until the batch is full or its time-out passes, which
       adds its time-out to every message of a quiet shard; a push delivers as it comes, and a
       shard with nothing to read costs nothing but a consumer probe every ``idle_probe_s``
       (is it still there and ours). What the server pushed while this process was
       disconnected comes again after the ack wait (``ack_wait_s``).

Losing it (released, expired, or a commit ``FencedOut``)
    The reader stops at once; batches received but not yet handed out are nak'ed (the next owner
    gets them at once); batches already committing settle as they end (a refused commit is
    nak'ed, an accepted one acked: both are safe, the store dedupes by cmid).

Settling
    ``done`` replies to REST submitters elsewhere (``Hubbub-Reply-To``), then acks each message:
    the persister calls it only after its ``on_committed`` (committed stream, fan-out) finished.
    ``retry`` naks with the persister's delay; the redelivered message commits as a duplicate if
    it was stored after all. A malformed message is terminated (logged), never retried.
    Redeliveries commit in a later batch than messages accepted after them, so a sender's two
    messages can get their seqs in the other order after a failed commit (as a resend does on
    one node).

Back-pressure: each shard has at most one batch waiting to be handed out, and its consumer at
most ``max_ack_pending`` unacked messages (pushed to this process's buffer at most), so a slow
store slows the deliveries, and JetStream, not this process's memory, holds the backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from cluster.committed import CommitReplier
from cluster.connection import ClusterConnection
from hubbub import cancelling, subjects
from hubbub.envelope import AcceptedMessage, CommitResult, WireFormatError, decode_accepted
from hubbub.stores import Fence, FencedOut

__all__ = ["IntakeBatch", "ShardIntake"]

logger = logging.getLogger(__name__)

FenceStore = Callable[[Fence], Awaitable[None]]
_PAUSE_S = 0.5  # after a failed NATS call, before the next
_EPOCH_LABEL = "hubbub persister epoch "  # the consumer's description: which owner made it


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation the NATS client turned into an error (it does when its connection closes)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _Superseded(Exception):
    """The shard's consumer was made by a newer owner: this one lost the shard."""


@dataclass
class IntakeBatch:
    """Messages of one shard received together, with the fence they commit under."""

    messages: list[AcceptedMessage]
    fence: Fence
    _msgs: list[Msg] = field(repr=False)
    _reply_to: list[str | None] = field(repr=False)
    _intake: ShardIntake = field(repr=False)
    _settled: bool = field(default=False, repr=False)

    @property
    def redelivers(self) -> bool:
        """JetStream delivers a nak'ed message again."""
        return True

    async def done(self, results: Sequence[CommitResult]) -> None:
        """Answer the REST submitters elsewhere, then ack every message (removed from the stream)."""
        if self._settle():
            try:
                await self._intake.reply(results, self._reply_to)
                await asyncio.gather(*(msg.ack() for msg in self._msgs))
            finally:
                self._intake.batch_settled()

    async def retry(self, delay_ms: int) -> None:
        """Nak every message with ``delay_ms``: they come again."""
        if self._settle():
            try:
                await self._nak(delay_ms / 1000)
            finally:
                self._intake.batch_settled()

    async def fenced_out(self) -> None:
        """A newer owner has the shard: stop reading it here, nak (for the owner to have at once)."""
        if self._settle():
            self._intake.stop_shard(self.fence)
            try:
                await self._nak(None)
            finally:
                self._intake.batch_settled()

    async def discard(self) -> None:
        """Never handed out (the shard was lost meanwhile): nak, for the next owner."""
        if not self._settled:
            self._settled = True
            await self._nak(None)

    async def _nak(self, delay_s: float | None) -> None:
        await asyncio.gather(*(msg.nak(delay=delay_s) for msg in self._msgs))

    def _settle(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        return True

    def split(self, size: int) -> tuple[IntakeBatch, IntakeBatch]:
        """The first ``size`` messages and the rest, as two batches of the same fence."""
        head = IntakeBatch(
            self.messages[:size], self.fence, self._msgs[:size], self._reply_to[:size], self._intake
        )
        tail = IntakeBatch(
            self.messages[size:], self.fence, self._msgs[size:], self._reply_to[size:], self._intake
        )
        return head, tail


@dataclass
class _Reader:
    epoch: int
    task: asyncio.Task[None]
    slot: asyncio.Semaphore  # one received batch waiting to be handed out, per shard


class ShardIntake:
    """``AcceptedSource`` over the shards this process holds (``ShardLeases`` drives it)."""

    def __init__(
        self,
        connection: ClusterConnection,
        *,
        replier: CommitReplier | None = None,
        fence_store: FenceStore | None = None,
        max_batch: int = 500,
        idle_probe_s: float = 5.0,
        ack_wait_s: float = 30.0,
        max_ack_pending: int | None = None,
    ) -> None:
        self._client = connection.client
        self._js = connection.js
        self._replier = replier
        self._fence_store = fence_store
        self._max_batch = max_batch
        self._idle_probe_s = idle_probe_s
        self._ack_wait_s = ack_wait_s
        self._max_ack_pending = max_ack_pending or 4 * max_batch
        self._readers: dict[int, _Reader] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._ready: deque[IntakeBatch] = deque()
        self._changed = asyncio.Condition()
        self._outstanding = 0  # handed out, not yet settled
        self.received = 0  # messages, for /metrics

    # --- ShardLeases callbacks (synchronous, must not block) ----------------------------------

    def shard_gained(self, shard: int, epoch: int) -> None:
        """Start reading ``shard`` under ``epoch`` (after the previous reader of it ended)."""
        previous = self._readers.pop(shard, None)
        if previous is not None:
            cancelling.cancel(previous.task)
        after = previous.task if previous is not None else None
        task = asyncio.create_task(self._read(shard, epoch, after), name=f"intake-shard-{shard}")
        self._readers[shard] = _Reader(epoch, task, asyncio.Semaphore(1))

    def shard_lost(self, shard: int, epoch: int) -> None:
        """Stop reading ``shard`` at once (if it is still read under ``epoch``)."""
        self.stop_shard(Fence(shard, epoch))

    def stop_shard(self, fence: Fence) -> None:
        """Stop the reader of ``fence.shard`` if it reads under ``fence.epoch``."""
        reader = self._readers.get(fence.shard)
        if reader is None or reader.epoch != fence.epoch:
            return
        del self._readers[fence.shard]
        if reader.task is not asyncio.current_task():  # a reader stopping itself just returns
            cancelling.cancel(reader.task)
        self._track(reader.task)
        stale = [batch for batch in self._ready if batch.fence.shard == fence.shard]
        for batch in stale:
            self._ready.remove(batch)
        if stale:
            self._track(asyncio.get_running_loop().create_task(self._discard_all(stale)))

    @property
    def owned(self) -> dict[int, int]:
        """Shard -> epoch of every shard read now."""
        return {shard: reader.epoch for shard, reader in self._readers.items()}

    def reading(self, shard: int) -> bool:
        """Whether the reader of ``shard`` runs."""
        reader = self._readers.get(shard)
        return reader is not None and not reader.task.done()

    @property
    def healthy(self) -> bool:
        """Every shard held has its reader running (for /healthz: a reader that ended is unhealthy)."""
        return all(not reader.task.done() for reader in self._readers.values())

    # --- AcceptedSource -------------------------------------------------------------------

    async def next_batch(self, max_messages: int) -> IntakeBatch:
        """The next batch of a shard still held, at most ``max_messages`` (waits for one)."""
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self._ready))
                batch = self._ready.popleft()
            reader = self._readers.get(batch.fence.shard)
            if reader is None or reader.epoch != batch.fence.epoch:
                await self._discard(batch)
                continue
            if len(batch.messages) > max_messages:
                batch, rest = batch.split(max_messages)
                self._ready.appendleft(rest)  # still before the shard's next batch
            else:
                reader.slot.release()  # the shard may gather its next batch
            self._outstanding += 1
            return batch

    async def settled(self) -> None:
        """Every batch handed out so far was settled (stop the leases first: nothing new then)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._outstanding == 0)

    # --- for the batches ----------------------------------------------------------------------

    async def reply(self, results: Sequence[CommitResult], reply_to: Sequence[str | None]) -> None:
        """Answer REST submitters elsewhere (nothing when no message asked for it)."""
        if self._replier is not None and any(subject is not None for subject in reply_to):
            await self._replier.reply(results, reply_to)

    def batch_settled(self) -> None:
        """A handed-out batch was settled."""
        self._outstanding -= 1
        self._wake()

    # --- life cycle -------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop every reader and nak what was received and not handed out."""
        for shard, reader in list(self._readers.items()):
            self.stop_shard(Fence(shard, reader.epoch))
        await asyncio.gather(*self._stopping, return_exceptions=True)
        while self._ready:
            await self._discard(self._ready.popleft())

    # --- the reader of one shard --------------------------------------------------------------

    async def _read(self, shard: int, epoch: int, after: asyncio.Task[None] | None) -> None:
        if after is not None:
            with contextlib.suppress(BaseException):
                await after
        fence = Fence(shard, epoch)
        try:
            await self._fence(fence)
            subscription = await self._retrying(lambda: self._subscribe(shard, epoch, check=False))
        except (FencedOut, _Superseded) as exc:
            logger.warning(
                "shard %d: a newer owner than epoch %d has it (%s); not reading", shard, epoch, exc
            )
            self.stop_shard(fence)
            return
        logger.info("reading accepted messages of shard %d under epoch %d", shard, epoch)
        try:
            while (reader := self._readers.get(shard)) is not None and reader.epoch == epoch:
                await reader.slot.acquire()
                try:
                    msgs = await self._collect(subscription)
                except TimeoutError:  # idle: is the consumer still there, and still ours?
                    reader.slot.release()
                    subscription = await self._probe(shard, epoch, subscription)
                    continue
                except NatsError as exc:  # the connection closed (or a bug): bind again
                    reader.slot.release()
                    _raise_if_cancelled()
                    logger.warning("reading shard %d failed (%r); binding its consumer again", shard, exc)
                    await asyncio.sleep(_PAUSE_S)
                    subscription = await self._rebind(shard, epoch, subscription)
                    continue
                batch = await self._batch(msgs, fence)
                if batch is None:
                    reader.slot.release()
                    continue
                async with self._changed:
                    self._ready.append(batch)
                    self._changed.notify_all()
        except _Superseded as exc:
            logger.warning("shard %d was taken over by epoch %s; stopping", shard, exc)
            self.stop_shard(fence)
        finally:
            with contextlib.suppress(NatsError):
                await subscription.unsubscribe()

    async def _collect(self, subscription: Subscription) -> list[Msg]:
        """The first message pushed (waits up to the idle probe), and whatever arrived with it."""
        msgs = [await subscription.next_msg(timeout=self._idle_probe_s)]
        while len(msgs) < self._max_batch and subscription.pending_msgs:
            msgs.append(await subscription.next_msg())
        return msgs

    async def _probe(self, shard: int, epoch: int, subscription: Subscription) -> Subscription:
        """An idle shard's consumer must still be there (else made again) and ours (else stop)."""
        try:
            await self._check_consumer(shard, epoch)
        except NotFoundError:
            logger.warning("the consumer of shard %d is gone; making it again", shard)
            return await self._rebind(shard, epoch, subscription)
        except (NatsError, TimeoutError) as exc:  # NATS is failing over: the next probe tells
            _raise_if_cancelled()
            logger.debug("probing the consumer of shard %d failed: %r", shard, exc)
        return subscription

    async def _rebind(self, shard: int, epoch: int, subscription: Subscription) -> Subscription:
        with contextlib.suppress(NatsError):
            await subscription.unsubscribe()
        return await self._retrying(lambda: self._subscribe(shard, epoch, check=True))

    async def _fence(self, fence: Fence) -> None:
        if self._fence_store is None:
            return
        while True:
            try:
                await self._fence_store(fence)
            except FencedOut:
                raise
            except Exception as exc:  # noqa: BLE001 - a store that is down: try again, the lease waits
                logger.warning("fencing shard %d failed (%r); retrying", fence.shard, exc)
                await asyncio.sleep(_PAUSE_S)
            else:
                return

    async def _check_consumer(self, shard: int, epoch: int) -> None:
        """Raise ``_Superseded`` if a newer owner made the shard's consumer, ``NotFoundError`` if none."""
        info = await self._js.consumer_info(subjects.ACCEPTED_STREAM, subjects.accepted_consumer(shard))
        made_by = int((info.config.description or "").removeprefix(_EPOCH_LABEL) or 0)
        if made_by > epoch:
            raise _Superseded(made_by)

    async def _subscribe(self, shard: int, epoch: int, *, check: bool) -> Subscription:
        """Make the shard's push consumer anew for this epoch and subscribe to what it delivers.

        Made anew, it delivers everything the stream holds for the shard (the ack floor on): on
        a gain, what the previous owner had not acked; on a rebind, this owner's unacked
        messages too (committed again as duplicates). ``check``: first make sure no newer
        owner made the one there (a stale owner must not take a shard back).
        """
        name = subjects.accepted_consumer(shard)
        if check:
            with contextlib.suppress(NotFoundError):
                await self._check_consumer(shard, epoch)
        with contextlib.suppress(NotFoundError):
            await self._js.delete_consumer(subjects.ACCEPTED_STREAM, name)
        deliver = self._client.new_inbox()
        subscription = await self._client.subscribe(deliver, pending_msgs_limit=self._max_ack_pending * 2)
        config = ConsumerConfig(
            durable_name=name,
            description=f"{_EPOCH_LABEL}{epoch}",
            deliver_subject=deliver,
            filter_subject=subjects.accepted(shard),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait_s,
            max_deliver=-1,
            max_ack_pending=self._max_ack_pending,
        )
        try:
            await self._js.add_consumer(subjects.ACCEPTED_STREAM, config)
        except BaseException:
            with contextlib.suppress(NatsError):
                await subscription.unsubscribe()
            raise
        return subscription

    async def _retrying(self, attempt: Callable[[], Awaitable[Subscription]]) -> Subscription:
        while True:
            try:
                return await attempt()
            except (NatsError, TimeoutError) as exc:
                _raise_if_cancelled()
                logger.warning("binding an accepted-messages consumer failed (%r); retrying", exc)
                await asyncio.sleep(_PAUSE_S)

    async def _batch(self, msgs: list[Msg], fence: Fence) -> IntakeBatch | None:
        messages: list[AcceptedMessage] = []
        kept: list[Msg] = []
        reply_to: list[str | None] = []
        for msg in msgs:
            try:
                message = decode_accepted(msg.data)
            except WireFormatError as exc:
                logger.error("terminated a malformed accepted message on %s: %s", msg.subject, exc)  # noqa: TRY400
                with contextlib.suppress(NatsError):
                    await msg.term()
                continue
            messages.append(message)
            kept.append(msg)
            reply_to.append((msg.headers or {}).get(subjects.REPLY_TO))
        self.received += len(messages)
        return IntakeBatch(messages, fence, kept, reply_to, self) if messages else None

    async def _discard(self, batch: IntakeBatch) -> None:
        try:
            await batch.discard()
        except NatsError as exc:  # its ack wait redelivers it
            logger.warning("nak of a batch of a lost shard failed: %r", exc)

    async def _discard_all(self, batches: list[IntakeBatch]) -> None:
        for batch in batches:
            await self._discard(batch)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def _wake(self) -> None:
        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        self._track(asyncio.get_running_loop().create_task(notify()))
