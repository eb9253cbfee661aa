"""Shard leases in a NATS KV bucket: one owner per shard at a time, an epoch per ownership.

A lease group (say the persisters) shares one KV bucket ``hubbub_leases_<group>`` whose keys are
``shard.<n>`` (who owns shard n) and ``member.<owner>`` (who is alive to own shards).

Acquire, renew, lose
    Acquire is ``create`` (succeeds only if the key has no live value); renew is ``update`` with
    the revision we last wrote (compare-and-set on the stream's last sequence for the subject);
    release is ``delete`` with that revision. A renew refused because the revision moved means
    the lease is gone: lost at once. A renew that fails otherwise (timeout, NATS failover) is
    retried at the next tick, and the lease is lost when its local deadline passes.

The epoch (fencing token)
    The revision of the acquiring write. Revisions are the bucket stream's sequence numbers, so
    every later acquisition, by anyone, has a higher one: epochs strictly increase on every
    ownership change. Renewals write new revisions but keep the epoch (it is stored in the
    value; ``0`` there means "the revision of this very record", which is what the acquiring
    write carries since it cannot know its own revision). The store must reject a commit whose
    epoch is lower than the highest it has seen for the shard; that, not the lease, is what
    stops a paused process (GC, SIGSTOP, a VM migration) that still believes it owns a shard.
    Never delete and recreate the bucket of a live cluster: its sequence, hence the epochs,
    would restart at 1 (reset the stores' fences along with it, or do not do it).

Expiry, and why clock skew does not break it (what NATS 2.9 offers)
    2.9 has no per-message TTL (``Nats-TTL`` is 2.11) and no expiry markers (2.11's
    ``subject_delete_marker_ttl``), but it has the stream's max age: the bucket's TTL, enforced
    by the NATS servers against the timestamp the stream leader put on the message when it
    stored it. The lease TTL *is* the bucket's max age, so an owner that stops renewing has its
    record removed by NATS ``ttl_s`` after its last renewal was stored, and anyone's ``create``
    succeeds after that. No client reads another machine's wall clock to decide anything; the
    time in the record (``renewed_at``, from the injectable ``clock``) is for people reading the
    bucket only.
    The owner's side is measured on its own monotonic clock from *before* it sent the renewal
    (the server stamps the record later, so it expires later): the owner treats the lease as
    valid until ``sent + ttl_s - safety_margin_s``. The margin absorbs rate drift between
    clocks and skew between NATS servers (the expiring replica may not be the one that stamped
    the message). A process paused past that point is what fencing is for.
    An expired entry leaves no tombstone and wakes no watcher in 2.9, so challengers poll: each
    tick reads a snapshot of the bucket and tries ``create`` on the shards it lacks.

Bound on a takeover after an owner dies
    The record expires at most ``ttl_s`` after the last renewal (servers' expiry timers are
    precise to milliseconds on 2.9), and a challenger tries at its next tick, so the shard has a
    new owner at most ``ttl_s + renew_interval_s`` (+ one round trip) after the dead owner's last
    renewal, i.e. ``(1 + renew_fraction) * ttl_s``. A graceful stop releases at once.

Choosing the TTL
    A persister's death moves its shards within ``(1 + renew_fraction) * ttl_s``: 7.5 s gives the
    10 s the cluster issue asks for (measured on this machine: a takeover 7.45-7.55 s after the
    dead owner's last renewal at 7.5 s, 2.95-3.06 s at 3 s). The kill -9 of the NATS server
    leading the bucket's stream makes the bucket unwritable until the other replicas elect a
    leader, which took 4.5-12 s on 2.9 here: with a TTL below that, every lease of the group
    runs out and is taken again under a new epoch (safe, and the accepted-messages stream is
    just as stalled meanwhile; it costs each new owner a fence and a read of its last seq).
    Riding through that without any change needs a TTL above ~15 s, so a slower failover.

The balancer
    Every member heartbeats ``member.<owner>`` (same max age) and, each tick, takes at most
    ``ceil(shards / live members)`` shards: a newcomer makes the others release their extras
    (which it then acquires), a member that leaves or dies leaves its shards to expire, and the
    rest pick them up. Owners try free shards in an order of their own (seeded by owner id),
    so racing owners mostly ask for different shards.

Callbacks ``on_gained(shard, epoch)`` and ``on_lost(shard, epoch)`` run on the lease loop and
must not block (start or stop work elsewhere): a slow callback delays renewals. ``on_lost`` is
called before a released lease is deleted, so the work stops before someone else can start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from cluster.kv import Bucket, ensure_bucket
from hubbub import cancelling

__all__ = ["LeaseRecord", "ShardCallback", "ShardLeases", "bucket_name"]

logger = logging.getLogger(__name__)

ShardCallback = Callable[[int, int], None]
_SHARD_PREFIX = "shard."
_MEMBER_PREFIX = "member."
_OWNER_ID = re.compile(r"^[-_=A-Za-z0-9]+$")
_TRANSIENT = (NatsError, TimeoutError, OSError)


def bucket_name(group: str) -> str:
    """The KV bucket of a lease group."""
    if not _OWNER_ID.match(group):
        raise ValueError(f"lease group {group!r} must be letters, digits, '-', '_' or '='")
    return f"hubbub_leases_{group}"


def _shard_key(shard: int) -> str:
    return f"{_SHARD_PREFIX}{shard}"


@dataclass(frozen=True)
class LeaseRecord:
    """Who owns a shard, under which epoch (as read from the bucket)."""

    shard: int
    owner: str
    epoch: int
    revision: int

    @classmethod
    def parse(cls, entry: KeyValue.Entry) -> LeaseRecord:
        """The record of a ``shard.<n>`` entry (epoch 0 in the value means its own revision)."""
        revision = entry.revision or 0  # entries read from the stream always have one
        value = orjson.loads(entry.value or b"{}")
        epoch = int(value.get("epoch") or revision)
        return cls(int(entry.key.removeprefix(_SHARD_PREFIX)), str(value.get("owner")), epoch, revision)


@dataclass
class _Held:
    epoch: int
    revision: int
    valid_until: float  # on this process's monotonic clock


class ShardLeases:
    """This process's side of a lease group: the shards it owns, kept, balanced and released."""

    def __init__(
        self,
        bucket: Bucket,
        *,
        owner_id: str,
        shards: int,
        ttl_s: float,
        renew_fraction: float = 1 / 3,
        safety_margin_s: float | None = None,
        on_gained: ShardCallback | None = None,
        on_lost: ShardCallback | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not _OWNER_ID.match(owner_id):
            raise ValueError(f"owner id {owner_id!r} must be letters, digits, '-', '_' or '='")
        if not 0 < renew_fraction <= 0.5:  # noqa: PLR2004 - at least two renewals per TTL
            raise ValueError("renew_fraction must be within (0, 0.5]")
        self.bucket = bucket
        self.owner_id = owner_id
        self.shards = shards
        self.ttl_s = ttl_s
        self.renew_interval_s = ttl_s * renew_fraction
        self.safety_margin_s = ttl_s / 4 if safety_margin_s is None else safety_margin_s
        if not 0 <= self.safety_margin_s < ttl_s - self.renew_interval_s:
            raise ValueError("safety_margin_s must leave time to renew before the lease runs out")
        self._on_gained = on_gained
        self._on_lost = on_lost
        self._clock = clock
        self._monotonic = monotonic
        self._held: dict[int, _Held] = {}
        self._order = random.Random(owner_id)  # noqa: S311 - spreading attempts, not a secret
        self._task: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._ticked = asyncio.Condition()
        self.ticks = 0  # rounds of heartbeat, renewals and balancing done (for /healthz)
        self.owner_changes = 0  # gains and losses, for /metrics

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        *,
        group: str,
        replicas: int,
        owner_id: str,
        shards: int,
        ttl_s: float,
        on_gained: ShardCallback | None = None,
        on_lost: ShardCallback | None = None,
    ) -> ShardLeases:
        """The leases of ``group`` over its bucket (created with max age ``ttl_s`` if absent)."""
        bucket = await ensure_bucket(js, bucket_name(group), ttl_s=ttl_s, replicas=replicas)
        return cls(
            bucket, owner_id=owner_id, shards=shards, ttl_s=ttl_s, on_gained=on_gained, on_lost=on_lost
        )

    # -- what owners ask -------------------------------------------------------------------

    def current_epoch(self, shard: int) -> int | None:
        """The epoch under which this process may act for ``shard`` now, or ``None``."""
        held = self._held.get(shard)
        if held is None or self._monotonic() >= held.valid_until:
            return None
        return held.epoch

    @property
    def owned(self) -> dict[int, int]:
        """Shard -> epoch of every shard whose lease is valid now."""
        now = self._monotonic()
        return {shard: held.epoch for shard, held in self._held.items() if now < held.valid_until}

    async def records(self) -> dict[int, LeaseRecord]:
        """Every live lease of the group as the bucket has it (for metrics and tests)."""
        entries = await self.bucket.latest(f"{_SHARD_PREFIX}>")
        return {record.shard: record for record in map(LeaseRecord.parse, entries.values())}

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Join the group and keep leases from now on (one tick runs before this returns)."""
        if self._task is not None:
            raise RuntimeError("leases already started")
        await self._tick()
        self._task = asyncio.create_task(self._run(), name=f"leases-{self.owner_id}")

    async def stop(self, *, release: bool = True) -> None:
        """Stop keeping leases; with ``release``, hand every shard back and leave at once."""
        task, self._task = self._task, None
        await cancelling.stop(task)
        # Every shard's work stops here first (``on_lost``), whatever NATS then says: a stop cut
        # short while handing the shards back (NATS gone, the shutdown deadline passed) leaves
        # nothing running on a lease that is no longer kept. The hand-backs go out at once.
        why = "released" if release else "stopped"
        lost = {shard: self._lose(shard, why) for shard in sorted(self._held)}
        self._arm_expiry()  # nothing held: the timer goes
        if release:
            await asyncio.gather(
                *(self._hand_back(shard, held) for shard, held in lost.items()),
                self._leave(),
            )

    async def _hand_back(self, shard: int, held: _Held) -> None:
        with contextlib.suppress(KeyWrongLastSequenceError, *_TRANSIENT):
            await self.bucket.kv.delete(_shard_key(shard), last=held.revision)

    async def _leave(self) -> None:
        with contextlib.suppress(*_TRANSIENT):
            await self.bucket.kv.delete(f"{_MEMBER_PREFIX}{self.owner_id}")

    @property
    def running(self) -> bool:
        """The lease loop is alive (for /healthz)."""
        return self._task is not None and not self._task.done()

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        next_tick = self._monotonic() + self.renew_interval_s
        while True:
            await asyncio.sleep(max(0.0, next_tick - self._monotonic()))
            next_tick = self._monotonic() + self.renew_interval_s
            await self._tick()

    async def _tick(self) -> None:
        # Each step on its own and bounded: a failed or slow heartbeat or snapshot must neither
        # skip nor delay the renewals.
        try:
            async with asyncio.timeout(self.renew_interval_s):
                await self.bucket.kv.put(f"{_MEMBER_PREFIX}{self.owner_id}", self._value(0))
        except _TRANSIENT as exc:
            logger.warning("lease heartbeat of %s failed (%r); retrying next tick", self.owner_id, exc)
        await asyncio.gather(*(self._renew(shard) for shard in list(self._held)))
        try:
            async with asyncio.timeout(self.renew_interval_s):
                await self._balance()
        except _TRANSIENT as exc:
            logger.warning("lease balancing of %s failed (%r); retrying next tick", self.owner_id, exc)
        self.ticks += 1
        async with self._ticked:
            self._ticked.notify_all()

    async def next_tick(self) -> None:
        """Wait until the lease loop finishes its next round (bound it by a timeout)."""
        async with self._ticked:
            await self._ticked.wait()

    async def _renew(self, shard: int) -> None:
        held = self._held.get(shard)
        if held is None:  # its deadline passed since the tick began
            return
        sent = self._monotonic()
        try:
            # A renewal answered after the local deadline is of no use: the lease is lost by then.
            async with asyncio.timeout(held.valid_until - sent):
                held.revision = await self.bucket.kv.update(
                    _shard_key(shard), self._value(held.epoch), last=held.revision
                )
        except KeyWrongLastSequenceError:
            if self._held.get(shard) is held:
                self._lose(shard, "taken over or expired")
        except _TRANSIENT as exc:
            logger.warning(
                "renewing shard %d failed (%r); the lease runs out unless a renewal lands", shard, exc
            )
        else:
            if self._held.get(shard) is not held:  # its deadline passed while the answer came
                await self._hand_back(shard, held)
                return
            held.valid_until = sent + self.ttl_s - self.safety_margin_s
            self._arm_expiry()

    async def _balance(self) -> None:
        entries = await self.bucket.latest()
        members = sum(key.startswith(_MEMBER_PREFIX) for key in entries)
        target = math.ceil(self.shards / max(1, members))
        surplus = len(self._held) - target
        if surplus > 0:
            for shard in sorted(self._held)[-surplus:]:
                await self._release(shard)
            return
        free = [shard for shard in range(self.shards) if _shard_key(shard) not in entries]
        self._order.shuffle(free)
        attempts = free[: target - len(self._held)]
        results = await asyncio.gather(*(self._acquire(shard) for shard in attempts), return_exceptions=True)
        for shard, result in zip(attempts, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning("acquiring shard %d failed (%r); retrying next tick", shard, result)

    async def _acquire(self, shard: int) -> None:
        sent = self._monotonic()
        try:
            revision = await self.bucket.kv.create(_shard_key(shard), self._value(0))
        except KeyWrongLastSequenceError:
            return  # someone else was quicker
        held = _Held(revision, revision, sent + self.ttl_s - self.safety_margin_s)
        if self._monotonic() >= held.valid_until:
            # Answered after the lease would have run out here: NATS may have expired the record
            # meanwhile and another holder taken the shard, its answer read in the same turn as
            # this one. Never act on it; hand it back (a no-op if it expired).
            await self._hand_back(shard, held)
            return
        self._held[shard] = held
        self._arm_expiry()
        self.owner_changes += 1
        logger.info("%s owns shard %d (epoch %d)", self.owner_id, shard, revision)
        self._notify(self._on_gained, shard, revision)

    async def _release(self, shard: int) -> None:
        if shard in self._held:  # not run out while an earlier release was answered
            await self._hand_back(shard, self._lose(shard, "released"))

    def _arm_expiry(self) -> None:
        """One timer at the earliest local deadline, whatever the loop is awaiting meanwhile.

        A tick can sit in a slow heartbeat or renewal for most of a renew interval on a loaded
        machine; a deadline checked only between ticks let ``on_lost`` come after the bucket had
        expired the record and another owner had taken it.
        """
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._held:
            delay = min(held.valid_until for held in self._held.values()) - self._monotonic()
            if delay <= 0:  # lost now: a turn of the loop later, another holder's gain could come first
                self._expire_overdue()
                return
            self._expiry = asyncio.get_running_loop().call_later(delay, self._expire_overdue)

    def _expire_overdue(self) -> None:
        self._expiry = None
        now = self._monotonic()
        for shard in [shard for shard, held in self._held.items() if now >= held.valid_until]:
            self._lose(shard, "not renewed in time")
        self._arm_expiry()

    def _lose(self, shard: int, why: str) -> _Held:
        held = self._held.pop(shard)
        self.owner_changes += 1
        logger.info("%s no longer owns shard %d (epoch %d): %s", self.owner_id, shard, held.epoch, why)
        self._notify(self._on_lost, shard, held.epoch)
        return held

    def _notify(self, callback: ShardCallback | None, shard: int, epoch: int) -> None:
        if callback is None:
            return
        try:
            callback(shard, epoch)
        except Exception:
            logger.exception("lease callback for shard %d failed", shard)

    def _value(self, epoch: int) -> bytes:
        return orjson.dumps({"owner": self.owner_id, "epoch": epoch, "renewed_at": self._clock()})
