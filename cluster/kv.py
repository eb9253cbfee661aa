"""KV buckets as the cluster uses them: created with the settings relied on, read as a snapshot.

NATS 2.9 expires KV entries only through the bucket's max age (one TTL for every key), and an
entry that ages out leaves no tombstone and wakes no watcher. So whoever needs "what is alive
now" (the lease balancer, the node registry) reads the bucket's latest values as a snapshot and
treats an absent key as expired, rather than keeping a watcher's view, which would never learn
that an entry aged out.
"""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from cluster.connection import ClusterConfigError

__all__ = ["ensure_bucket", "read_latest"]

# An ephemeral snapshot consumer that was not cleaned up goes away after this long.
_SNAPSHOT_CONSUMER_IDLE_S = 5.0


async def ensure_bucket(
    js: JetStreamContext,
    name: str,
    *,
    ttl_s: float | None,
    replicas: int,
    history: int = 1,
    storage: StorageType = StorageType.FILE,
) -> KeyValue:
    """The KV bucket ``name``, created if absent; an existing one must have this max age (TTL)."""
    try:
        bucket = await js.key_value(name)
    except BucketNotFoundError:
        config = KeyValueConfig(
            bucket=name, history=history, ttl=ttl_s, replicas=replicas, storage=storage, direct=True
        )
        return await js.create_key_value(config)
    existing = (await bucket.status()).ttl or None
    if existing != ttl_s:
        raise ClusterConfigError(
            f"KV bucket {name} has max age {existing}s, this node needs {ttl_s}s: delete or edit the bucket"
        )
    return bucket


async def read_latest(bucket: KeyValue, keys: str = ">", timeout_s: float = 5.0) -> dict[str, KeyValue.Entry]:
    """The latest live value of every key matching ``keys`` (deleted and aged-out keys absent)."""
    watcher = await bucket.watch(keys, ignore_deletes=True, inactive_threshold=_SNAPSHOT_CONSUMER_IDLE_S)
    entries: dict[str, KeyValue.Entry] = {}
    try:
        async with asyncio.timeout(timeout_s):
            async for entry in watcher:
                if entry is None:  # the watcher's marker: every value present at the start was seen
                    break
                entries[entry.key] = entry
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call] # nats-py leaves it unannotated
    return entries
