"""KV buckets as the cluster uses them: created with the settings relied on, read as a snapshot.

NATS 2.9 expires KV entries only through the bucket's max age (one TTL for every key), and an
entry that ages out leaves no tombstone and wakes no watcher. So whoever needs "what is alive
now" (the lease balancer, the node registry) reads the bucket's live values as a snapshot and
treats an absent key as expired, rather than keeping a watcher's view, which would never learn
that an entry aged out.

A snapshot uses no consumer: the stream's per-subject counts (``STREAM.INFO`` with a subjects
filter) say which keys hold a message, and reads from the stream's leader get them, skipping
delete markers. Not direct gets: any replica answers those, and one that lags returns an older
value, or none for a key the leader just counted (a presence mirror refreshed from such a read
took users that were online for offline). A watcher would need an ephemeral consumer, and on 2.9 creating one
fails about one time in three while a replica of the bucket is down (it may be placed on the
dead server), which would stall the lease balancer exactly when a NATS server has died.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from cluster.connection import ClusterConfigError
from hubbub import subjects

__all__ = ["Bucket", "ensure_bucket"]

_OPERATION = "KV-Operation"  # the header NATS KV marks a delete or purge with
_REMOVED = frozenset({"DEL", "PURGE"})


@dataclass(frozen=True)
class Bucket:
    """A KV bucket with what its snapshot needs: its name and the JetStream context."""

    name: str
    kv: KeyValue
    js: JetStreamContext

    async def read_from_leader(self, key: str) -> bytes | None:
        """``key``'s value as the stream's leader holds it; ``None`` if absent or deleted.

        ``kv.get`` uses direct gets, answered by any replica: one that lags may still hold a value
        this process has already seen replaced on the bucket's subject. This read does not lag.
        """
        entry = await self._get(key)
        return None if entry is None else entry.value

    async def _get(self, key: str) -> KeyValue.Entry | None:
        """``key``'s entry as the leader holds it (revision = stream sequence); ``None`` if removed."""
        try:
            stream, subject = subjects.kv_stream(self.name), subjects.kv_key(self.name, key)
            message = await self.js.get_last_msg(stream, subject)
        except NotFoundError:  # absent, or aged out since the count was taken
            return None
        if (message.headers or {}).get(_OPERATION) in _REMOVED:
            return None
        return KeyValue.Entry(self.name, key, message.data, message.seq, None, None, None)

    async def latest(self, keys: str = ">") -> dict[str, KeyValue.Entry]:
        """The live value of every key matching ``keys`` (deleted and aged-out keys absent)."""
        prefix = f"$KV.{self.name}."
        info = await self.js.stream_info(f"KV_{self.name}", subjects_filter=f"{prefix}{keys}")
        names = [subject.removeprefix(prefix) for subject in (info.state.subjects or {})]
        found = await asyncio.gather(*(self._get(key) for key in names))
        return {entry.key: entry for entry in found if entry is not None}


async def ensure_bucket(
    js: JetStreamContext,
    name: str,
    *,
    ttl_s: float | None,
    replicas: int,
    history: int = 1,
    storage: StorageType = StorageType.FILE,
) -> Bucket:
    """The KV bucket ``name``, created if absent; an existing one must have this max age (TTL)."""
    try:
        kv = await js.key_value(name)
    except BucketNotFoundError:
        config = KeyValueConfig(
            bucket=name, history=history, ttl=ttl_s, replicas=replicas, storage=storage, direct=True
        )
        return Bucket(name, await js.create_key_value(config), js)
    existing = (await kv.status()).ttl or None
    if existing != ttl_s:
        raise ClusterConfigError(
            f"KV bucket {name} has max age {existing}s, this node needs {ttl_s}s: delete or edit the bucket"
        )
    return Bucket(name, kv, js)
