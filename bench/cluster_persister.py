"""Failover in a cluster: ``kill -9`` of the persister owning a conversation's shard.

A device keeps sending to a conversation (one message per ``SEND_EVERY_S``); the persister owning
its shard (read from the ``persister`` lease bucket) is killed. The figures are from the kill to
the lease record naming another owner, and to the first ``ack`` (sent only after a commit) the
device receives after that change: the new owner's first commit of the shard.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import nats
from nats.js.errors import KeyNotFoundError

from bench.cluster_devices import Sender
from bench.mqtt_wire import MqttConnection
from cluster.leases import LeaseRecord, bucket_name
from hubbub import topics

if TYPE_CHECKING:
    from bench.cluster_target import ClusterTarget
    from bench.hubbub_up import BenchUser

__all__ = ["PersisterFailover", "run_persister_failover"]

NS = 1_000_000_000
SEND_EVERY_S = 0.02
FLOWING_ACKS = 5  # acks seen before the kill: commits flow


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class PersisterFailover:
    """``kill -9`` of the persister owning a shard: when another owned it and committed."""

    shard: int
    old_owner: str
    new_owner: str
    lease_moved_s: float  # kill to the lease record naming the new owner
    first_commit_s: float  # kill to the first ack received after the lease moved
    longest_wait_s: float  # the longest send-to-ack of a message sent around the kill


async def _lease(kv: object, shard: int) -> LeaseRecord | None:
    from nats.js.kv import KeyValue  # noqa: PLC0415 - only for the type check

    assert isinstance(kv, KeyValue)  # noqa: S101
    try:
        return LeaseRecord.parse(await kv.get(f"shard.{shard}"))
    except KeyNotFoundError:
        return None


async def _persister_failover(
    target: ClusterTarget, sender: BenchUser, conversation_id: int
) -> PersisterFailover:
    shard = target.shards.conversation(conversation_id)
    client = await nats.connect(servers=target.nats.urls)
    host, port = target.brokers[-1].ready.mqtt
    conn = await MqttConnection.subscribed(
        host,
        port,
        client_id=sender.device_id,
        username=str(sender.user_id),
        password=sender.token,
        topic=topics.inbox(sender.user_id),
    )
    device = Sender(conn, conversation_id)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(device.send(stop, SEND_EVERY_S)), asyncio.create_task(device.read())]
    try:
        kv = await client.jetstream().key_value(bucket_name("persister"))
        for _ in range(600):  # the flow runs: acks come back
            if len(device.acks) >= FLOWING_ACKS:
                break
            await asyncio.sleep(0.05)
        old = await _lease(kv, shard)
        if old is None:
            raise RuntimeError(f"no persister owns shard {shard}")
        killed_ns = time.time_ns()
        await asyncio.to_thread(target.processes[old.owner].kill)
        new = old
        for _ in range(1200):
            record = await _lease(kv, shard)
            if record is not None and record.owner != old.owner:
                new = record
                break
            await asyncio.sleep(0.05)
        moved_ns = time.time_ns()
        for _ in range(1200):
            if any(received > moved_ns for received, _ in device.acks):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)  # the messages held up by the kill are acked too
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conn.close()
        await client.close()
    first = min((received for received, _ in device.acks if received > moved_ns), default=0)
    around = [received - sent for received, sent in device.acks if received > killed_ns]
    return PersisterFailover(
        shard=shard,
        old_owner=old.owner,
        new_owner=new.owner,
        lease_moved_s=(moved_ns - killed_ns) / NS if new is not old else float("nan"),
        first_commit_s=(first - killed_ns) / NS if first else float("nan"),
        longest_wait_s=max(around, default=0) / NS,
    )


def run_persister_failover(target: ClusterTarget) -> PersisterFailover:
    """A fresh 1:1 conversation with a sending device; its shard's persister killed."""
    a, b = target.make_users(2)
    with httpx.Client(base_url=target.http_url, timeout=30) as http:
        cid = target.create_conversation(http, a, {"type": "direct", "user_id": str(b.user_id)})
    result = asyncio.run(_persister_failover(target, a, cid))
    _say(
        f"[failover] persister of shard {result.shard} ({result.old_owner}) killed: lease to "
        f"{result.new_owner} in {result.lease_moved_s:.1f} s, first commit {result.first_commit_s:.1f} s"
    )
    return result
