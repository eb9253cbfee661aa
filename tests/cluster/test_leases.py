"""Shard leases against a real 3-server NATS: one owner per shard, rising epochs, failover, balance."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from nats.errors import Error as NatsError
from nats.js.errors import KeyWrongLastSequenceError

from cluster.connection import ClusterConfigError, ClusterConnection, NatsOptions
from cluster.kv import Bucket, ensure_bucket
from cluster.leases import ShardLeases, bucket_name
from tests.support.leases import freeze
from tests.support.nats import start_nats, when_jetstream_answers

SHARDS = 8
TTL_S = 3.0
BOUND_S = 60.0  # the whole test, on a loaded machine: generous, never a measurement


@dataclass
class Ledger:
    """Every holder's shards as their callbacks reported them, and every gain in order."""

    owned: dict[str, dict[int, int]] = field(default_factory=dict)
    gains: list[tuple[int, int, str]] = field(default_factory=list)
    overlaps: list[tuple[int, str, str]] = field(default_factory=list)
    gained_at: dict[tuple[str, int], float] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def callbacks(self, owner: str) -> tuple[Callable[[int, int], None], Callable[[int, int], None]]:
        self.owned[owner] = {}

        def gained(shard: int, epoch: int) -> None:
            self.overlaps.extend(
                (shard, owner, other) for other, shards in self.owned.items() if shard in shards
            )
            self.owned[owner][shard] = epoch
            self.gains.append((shard, epoch, owner))
            self.gained_at[owner, shard] = time.monotonic()
            self._changed.set()

        def lost(shard: int, epoch: int) -> None:
            assert self.owned[owner].pop(shard, epoch) == epoch  # absent once forgotten
            self._changed.set()

        return gained, lost

    def forget(self, owner: str) -> None:
        """A holder taken away without a word (its process is gone, as far as the others know)."""
        self.owned[owner] = {}

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    def counts(self) -> dict[str, int]:
        return {owner: len(shards) for owner, shards in self.owned.items()}

    def covered_once(self) -> bool:
        seen = [shard for shards in self.owned.values() for shard in shards]
        return sorted(seen) == list(range(SHARDS))


@pytest.fixture
async def group(conn: ClusterConnection, unique: str) -> AsyncIterator[tuple[Bucket, list[ShardLeases]]]:
    """A lease bucket of its own, and the holders a test starts (all stopped at the end)."""
    bucket = await ensure_bucket(conn.js, bucket_name(unique), ttl_s=TTL_S, replicas=3)
    holders: list[ShardLeases] = []
    yield bucket, holders
    for holder in holders:
        await holder.stop()


async def agreed(leases: ShardLeases, ledger: Ledger) -> bool:
    """The holders own every shard once, evenly, and the bucket says the same."""
    if not (ledger.covered_once() and set(ledger.counts().values()) == {SHARDS // len(ledger.owned)}):
        return False
    try:
        records = await leases.records()
    except (NatsError, TimeoutError):  # the bucket or the meta group still without a leader
        return False
    return {shard: (record.owner, record.epoch) for shard, record in records.items()} == {
        shard: (owner, epoch) for owner, shards in ledger.owned.items() for shard, epoch in shards.items()
    }


def holder(
    bucket: Bucket, holders: list[ShardLeases], ledger: Ledger, owner: str, ttl_s: float = TTL_S
) -> ShardLeases:
    gained, lost = ledger.callbacks(owner)
    leases = ShardLeases(bucket, owner_id=owner, shards=SHARDS, ttl_s=ttl_s, on_gained=gained, on_lost=lost)
    holders.append(leases)
    return leases


async def test_racing_holders_end_with_exactly_one_owner_per_shard(
    group: tuple[Bucket, list[ShardLeases]],
) -> None:
    bucket, holders = group
    ledger = Ledger()
    a, b = holder(bucket, holders, ledger, "a"), holder(bucket, holders, ledger, "b")
    async with asyncio.timeout(BOUND_S):
        await asyncio.gather(a.start(), b.start())
        while not await agreed(a, ledger):  # each holder ends with 4, the bucket agrees
            await a.next_tick()
    assert ledger.overlaps == []
    assert a.owned == ledger.owned["a"]
    assert all(b.current_epoch(shard) is None for shard in ledger.owned["a"])


async def test_epochs_strictly_increase_on_every_ownership_change(
    group: tuple[Bucket, list[ShardLeases]],
) -> None:
    bucket, holders = group
    ledger = Ledger()
    a = holder(bucket, holders, ledger, "a")
    b = holder(bucket, holders, ledger, "b")
    async with asyncio.timeout(BOUND_S):
        await a.start()
        await ledger.until(lambda: ledger.counts()["a"] == SHARDS)
        await b.start()  # a hands half over
        await ledger.until(lambda: ledger.counts() == {"a": 4, "b": 4})
        await a.stop()  # a releases everything, b takes it all
        await ledger.until(lambda: ledger.counts()["b"] == SHARDS)
    assert ledger.overlaps == []
    by_shard: dict[int, list[int]] = {}
    for shard, epoch, _owner in ledger.gains:
        by_shard.setdefault(shard, []).append(epoch)
    assert set(by_shard) == set(range(SHARDS))
    for epochs in by_shard.values():
        assert epochs == sorted(set(epochs)), epochs  # strictly increasing
    assert sum(len(epochs) for epochs in by_shard.values()) == SHARDS + 4 + 4


async def test_an_owner_that_stops_renewing_loses_its_shards_to_the_other(
    group: tuple[Bucket, list[ShardLeases]], record_property: Callable[[str, object], None]
) -> None:
    bucket, holders = group
    ledger = Ledger()
    a, b = holder(bucket, holders, ledger, "a"), holder(bucket, holders, ledger, "b")
    async with asyncio.timeout(BOUND_S):
        await a.start()
        await b.start()
        await ledger.until(lambda: ledger.counts() == {"a": 4, "b": 4})
        stale = dict(ledger.owned["a"])
        stale_revisions = {shard: a._held[shard].revision for shard in stale}
        freeze(a)  # paused: no renewal, and it still believes what it believed
        paused_at = time.monotonic()
        ledger.forget("a")
        await ledger.until(lambda: ledger.counts()["b"] == SHARDS)
    takeover_s = max(ledger.gained_at["b", shard] for shard in stale) - paused_at
    record_property("lease_takeover_s", round(takeover_s, 3))
    record_property("lease_takeover_bound_s", TTL_S + b.renew_interval_s)
    for shard, old_epoch in stale.items():
        assert ledger.owned["b"][shard] > old_epoch
        # The paused owner's own clock already told it the lease was gone...
        assert a.current_epoch(shard) is None
        # ...and a late renewal from it is refused by the compare-and-set.
        with pytest.raises(KeyWrongLastSequenceError):
            await bucket.kv.update(f"shard.{shard}", b"{}", last=stale_revisions[shard])
    records = await b.records()
    assert {record.owner for record in records.values()} == {"b"}


async def test_a_third_holder_takes_its_share_and_gives_it_back_on_leaving(
    group: tuple[Bucket, list[ShardLeases]],
) -> None:
    bucket, holders = group
    ledger = Ledger()
    a, b, c = (holder(bucket, holders, ledger, name) for name in "abc")
    async with asyncio.timeout(BOUND_S):
        await a.start()
        await b.start()
        await ledger.until(lambda: ledger.counts() == {"a": 4, "b": 4, "c": 0})
        await c.start()
        # ceil(8 / 3) = 3 at most each: a and b give up one or two, c takes them.
        await ledger.until(
            lambda: ledger.covered_once() and max(ledger.counts().values()) <= 3 and ledger.counts()["c"] >= 2
        )
        await c.stop()
        await ledger.until(lambda: ledger.covered_once() and ledger.counts() == {"a": 4, "b": 4, "c": 0})
    assert ledger.overlaps == []


async def test_a_lease_answered_after_it_would_have_run_out_is_never_acted_on(
    group: tuple[Bucket, list[ShardLeases]],
) -> None:
    """A creation answered late (a stalled process): NATS may have expired it and given it to another.

    Its clock moves a whole TTL between asking and reading each answer, so every shard it wins
    comes back too late: it never reports one as gained, and hands each back.
    """
    bucket, holders = group
    ledger = Ledger()
    gained, lost = ledger.callbacks("late")
    jumps = itertools.count(step=TTL_S)
    late = ShardLeases(
        bucket,
        owner_id="late",
        shards=SHARDS,
        ttl_s=TTL_S,
        on_gained=gained,
        on_lost=lost,
        monotonic=lambda: time.monotonic() + next(jumps),
    )
    holders.append(late)
    async with asyncio.timeout(BOUND_S):
        await late.start()
        assert ledger.gains == []
        assert late.owned == {}
        assert await late.records() == {}
        await late.stop()
        on_time = holder(bucket, holders, ledger, "on_time")  # the shards are free for the next one
        await on_time.start()
        await ledger.until(lambda: ledger.counts()["on_time"] == SHARDS)
    assert ledger.overlaps == []


async def test_the_value_says_who_owns_since_which_epoch(group: tuple[Bucket, list[ShardLeases]]) -> None:
    bucket, holders = group
    ledger = Ledger()
    a = holder(bucket, holders, ledger, "a")
    async with asyncio.timeout(BOUND_S):
        await a.start()
    entry = await bucket.kv.get("shard.0")
    value = orjson.loads(entry.value or b"")
    assert value["owner"] == "a"
    assert value["epoch"] in {0, ledger.owned["a"][0]}  # 0 on the acquiring write itself
    assert (await a.records())[0].epoch == ledger.owned["a"][0]


async def test_a_bucket_with_another_ttl_is_refused(conn: ClusterConnection, unique: str) -> None:
    await ensure_bucket(conn.js, bucket_name(unique), ttl_s=TTL_S, replicas=3)
    with pytest.raises(ClusterConfigError, match="max age"):
        await ShardLeases.open(
            conn.js, group=unique, replicas=3, owner_id="x", shards=SHARDS, ttl_s=TTL_S * 2
        )


def test_bad_names_and_timings_are_refused(group: tuple[Bucket, list[ShardLeases]]) -> None:
    bucket, _ = group
    with pytest.raises(ValueError, match="lease group"):
        bucket_name("a.b")
    with pytest.raises(ValueError, match="owner id"):
        ShardLeases(bucket, owner_id="has space", shards=SHARDS, ttl_s=TTL_S)
    with pytest.raises(ValueError, match="renew_fraction"):
        ShardLeases(bucket, owner_id="x", shards=SHARDS, ttl_s=TTL_S, renew_fraction=0.9)
    with pytest.raises(ValueError, match="safety_margin_s"):
        ShardLeases(bucket, owner_id="x", shards=SHARDS, ttl_s=TTL_S, safety_margin_s=TTL_S)


async def test_killing_the_nats_server_that_leads_the_lease_bucket_leaves_one_owner_per_shard(
    tmp_path: Path,
) -> None:
    cluster = start_nats(tmp_path, size=3)
    ledger = Ledger()
    holders: list[ShardLeases] = []
    connection = await ClusterConnection.connect(NatsOptions(servers=tuple(cluster.urls), name="kill"))
    try:
        bucket = await ensure_bucket(connection.js, bucket_name("kill"), ttl_s=TTL_S, replicas=3)
        a, b = holder(bucket, holders, ledger, "a"), holder(bucket, holders, ledger, "b")
        async with asyncio.timeout(BOUND_S):
            await a.start()
            await b.start()
            await ledger.until(lambda: ledger.counts() == {"a": 4, "b": 4})
            info = await connection.js.stream_info(f"KV_{bucket_name('kill')}")
            assert info.cluster is not None
            next(server for server in cluster.servers if server.name == info.cluster.leader).kill()
            await when_jetstream_answers(lambda: bucket.kv.put("probe", b""))
            # Leases that ran out while the bucket had no leader are taken again, under new epochs;
            # after each round of the lease loop, look whether the bucket and the holders agree.
            await a.next_tick()
            while not await agreed(a, ledger):
                await a.next_tick()
        assert ledger.overlaps == []
        for shard in range(SHARDS):
            epochs = [epoch for gained, epoch, _ in ledger.gains if gained == shard]
            assert epochs == sorted(set(epochs))
    finally:
        for leases in holders:
            await leases.stop()
        await connection.close()
        cluster.stop()
