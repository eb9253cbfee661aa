"""The persister that owns a conversation's shard: killed mid-burst, and frozen past its lease.

``kill -9``: the shard's lease moves to the other persister within the bound cluster/leases.py
states ((1 + 1/3) x the lease TTL after the dead owner's last renewal; waited for with that bound
plus room for a loaded machine to run the challenger's tick), and history has every message once
with a dense seq. ``SIGSTOP`` past the lease, then ``SIGCONT``: the other persister has taken the
shard under a higher epoch, the store's fence for the shard holds that epoch (so a commit of the
stale owner is refused, ``FencedOut``), the resumed owner lets the shard go, and nothing is lost
or doubled. Whether the resumed owner still tries a commit is a race it usually loses to its own
lease loop (timers run before sockets are read after ``SIGCONT``): the refusal itself is shown
deterministically by tests/cluster/test_intake.py and tests/persister/test_sql_fencing.py.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from client import HubbubClient
from cluster.leases import LeaseRecord
from launcher.devcluster import HubbubProcess
from persister.sql_schema import shard_fences
from tests.support.chat import direct_conversation, expect_event
from tests.support.cluster import (
    LEASE_TAKEOVER_BOUND_S,
    OUTCOME_S,
    ClusterClients,
    HubbubCluster,
    assert_once_and_dense,
    eventually,
)

pytestmark = pytest.mark.timeout(300)

BURST = 150
LOADED_MACHINE_S = 5.0  # a challenger's tick that runs late on two busy cores


async def _fence_epoch(database_url: str, shard: int) -> int | None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            epoch = await connection.scalar(select(shard_fences.c.epoch).where(shard_fences.c.shard == shard))
    finally:
        await engine.dispose()
    return None if epoch is None else int(epoch)


def _owner(cluster: HubbubCluster, record: LeaseRecord) -> HubbubProcess:
    return next(process for process in cluster.persisters if process.name == record.owner)


def _new_owner(cluster: HubbubCluster, shard: int, old: LeaseRecord) -> LeaseRecord:
    def taken() -> LeaseRecord | None:
        record = cluster.leases("persister").get(shard)
        return record if record is not None and record.owner != old.owner else None

    return eventually(
        taken, f"shard {shard} has a new owner", timeout=LEASE_TAKEOVER_BOUND_S + LOADED_MACHINE_S
    )


def _pair(cluster: HubbubCluster, users: ClusterClients) -> tuple[HubbubClient, HubbubClient, str]:
    one, two = cluster.brokers
    alice, bob = users(broker=one), users(broker=two)
    conversation_id = direct_conversation(alice, bob)
    assert alice.settled()
    assert bob.settled()
    return alice, bob, conversation_id


def _complete(device: HubbubClient, conversation_id: str, cmids: set[str]) -> None:
    assert device.settled(OUTCOME_S)
    timeline = device.timelines[conversation_id]
    assert timeline.held == len(cmids)
    assert {message["cmid"] for message in timeline.ordered()} == cmids


def test_the_owner_killed_mid_burst_hands_its_shard_over_and_nothing_is_lost(
    cluster: HubbubCluster, users: ClusterClients
) -> None:
    alice, bob, conversation_id = _pair(cluster, users)
    shard = cluster.shards.conversation(int(conversation_id))
    owner = cluster.lease_of_conversation(conversation_id)
    cmids = {alice.send(conversation_id, f"burst {index}").cmid for index in range(BURST)}
    for _ in range(BURST // 3):
        expect_event(alice, "ack")
    _owner(cluster, owner).kill()
    successor = _new_owner(cluster, shard, owner)
    assert successor.epoch > owner.epoch
    assert alice.outbox.emptied.wait(OUTCOME_S), f"{len(alice.outbox)} of {BURST} never acknowledged"
    rows = assert_once_and_dense(bob, conversation_id, cmids)
    assert len(rows) == BURST
    _complete(bob, conversation_id, cmids)


def test_an_owner_paused_past_its_lease_has_its_stale_commit_refused(
    cluster: HubbubCluster, users: ClusterClients
) -> None:
    alice, bob, conversation_id = _pair(cluster, users)
    shard = cluster.shards.conversation(int(conversation_id))
    owner = cluster.lease_of_conversation(conversation_id)
    stale = _owner(cluster, owner)
    cmids = {alice.send(conversation_id, f"steady {index}").cmid for index in range(BURST)}
    for _ in range(BURST // 3):  # the owner freezes in the middle of the traffic, batches in hand
        expect_event(alice, "ack")
    stale.pause()
    successor = _new_owner(cluster, shard, owner)
    assert successor.epoch > owner.epoch
    assert alice.outbox.emptied.wait(OUTCOME_S), f"{len(alice.outbox)} of {BURST} never acknowledged"

    def fenced() -> int | None:  # the successor fences the store when it gains the shard
        epoch = asyncio.run(_fence_epoch(cluster.processes.database_url, shard))
        return epoch if epoch is not None and epoch >= successor.epoch else None

    eventually(fenced, "the successor fenced the store")  # it refuses the stale epoch from now on
    log_before = len(stale.log())
    let_go = re.compile(
        rf"no longer owns shard {shard} \(epoch {owner.epoch}\)|fenced out of shard.*shard={shard},"
    )
    stale.resume()
    eventually(
        lambda: True if let_go.search(stale.log()[log_before:]) else None,
        "the resumed owner let the shard go",
    )
    rows = assert_once_and_dense(bob, conversation_id, cmids)
    assert len(rows) == BURST
    _complete(bob, conversation_id, cmids)
