"""``hubbub persister``: commits the conversation shards it leases, in a cluster."""

from __future__ import annotations

from config import Settings
from launcher.cluster_node import cluster_node
from launcher.foundation import foundation

__all__ = ["run_cluster_persister"]


async def run_cluster_persister(settings: Settings) -> None:
    """A persister node: registered, healthy only while NATS and its loops are."""
    async with foundation(settings) as core, cluster_node(settings, "persister") as node:
        del core
        await node.serve_health()
