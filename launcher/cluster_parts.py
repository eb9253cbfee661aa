"""Parts several cluster processes build the same way: the presence bucket and mirror."""

from __future__ import annotations

from api import SqlDirectory
from cluster.connection import ClusterConnection
from cluster.kv import Bucket
from cluster.presence_mirror import PresenceMirror, open_presence_bucket
from config import Settings
from launcher.cluster_node import retrying
from launcher.foundation import shard_map

__all__ = ["presence_bucket", "presence_mirror"]


async def presence_bucket(connection: ClusterConnection, settings: Settings) -> Bucket:
    """The presence KV bucket the writers write and every mirror reads (no max age)."""
    return await retrying(
        "opening the presence bucket",
        lambda: open_presence_bucket(connection.js, replicas=settings.nats_replicas),
    )


async def presence_mirror(
    connection: ClusterConnection, settings: Settings, directory: SqlDirectory
) -> PresenceMirror:
    """Who is online in the whole cluster, followed from the presence bucket (started)."""
    bucket = await presence_bucket(connection, settings)
    mirror = PresenceMirror(connection, bucket, shard_map(settings), last_active=directory.last_active)
    await mirror.start()
    return mirror
