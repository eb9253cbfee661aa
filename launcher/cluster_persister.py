"""``hubbub persister``: commits the conversation shards it leases, then hands the results on.

Composed of the lease group ``persister`` over the conversation shards driving ``ShardIntake``
(per gained shard: fence the store with the epoch, read the shard's durable consumer of
``HUBBUB_ACCEPTED`` from its ack floor) and the ``Persister``, whose ``on_committed`` publishes
the results to ``HUBBUB_COMMITTED`` (for the notifiers) and fans the events out over
``hubbub.inbox.<uid>`` (members from the account database, cached, forgotten on
``hubbub.membership.changed``); settling a batch then answers REST submitters on their
``Hubbub-Reply-To`` subject and acks the messages. ``/healthz`` and ``/metrics`` (lag per owned
shard) on ``http_port``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import async_sessionmaker

from api import SqlDirectory
from cluster.accepted import ensure_accepted_stream
from cluster.committed import CommitReplier, CommittedPublisher, ensure_committed_stream
from cluster.inbox import NatsInboxes, follow_membership_changes, forget_memberships_on_reconnect
from cluster.intake import ShardIntake
from config import Settings
from hubbub import subjects
from hubbub.envelope import CommitResult
from launcher.cluster_node import cluster_node, retrying
from launcher.foundation import foundation, ingest_limits, shard_map
from messaging import LoopClock
from messaging.fanout import fan_out
from messaging.membership import MembershipCache
from persister import Persister

__all__ = ["run_cluster_persister"]

logger = logging.getLogger(__name__)

_SETTLE_AT_SHUTDOWN_S = 30.0


async def run_cluster_persister(settings: Settings) -> None:
    """A persister node: commits the shards it leases; released and settled on a graceful stop."""
    async with foundation(settings) as core, cluster_node(settings, "persister") as node:
        connection = node.connection
        shards = shard_map(settings)
        await retrying(
            "creating the accepted stream",
            lambda: ensure_accepted_stream(connection.js, settings.nats_replicas),
        )
        await retrying(
            "creating the committed stream",
            lambda: ensure_committed_stream(connection.js, settings.nats_replicas),
        )
        sessions = async_sessionmaker(core.engine, expire_on_commit=False)
        membership = MembershipCache(
            SqlDirectory(sessions), LoopClock(), ingest_limits(settings).membership_ttl_s
        )
        await follow_membership_changes(connection.client, membership.forget)
        forget_memberships_on_reconnect(connection.state, membership.forget_all)
        inboxes = NatsInboxes(connection.client)
        committed = CommittedPublisher(connection.js, shards)
        intake = ShardIntake(
            connection, replier=CommitReplier(connection.client), fence_store=core.store.fence
        )

        async def on_committed(results: Sequence[CommitResult]) -> None:
            await committed.publish(results)  # a failure: the batch is not acked and comes again
            await fan_out(results, membership.members, inboxes)

        leases = await node.lease_group(
            "persister",
            settings.conversation_shards,
            on_gained=intake.shard_gained,
            on_lost=intake.shard_lost,
            lag_stream=subjects.ACCEPTED_STREAM,
        )
        lag = node.collector.lags[-1]  # idle is fine; a backlog its consumers do not fetch is not
        persister = Persister(core.store, intake, on_committed)
        node.supervisor.add(
            "persister", persister.run, progress=lambda: intake.received, probe=lag.nothing_undelivered
        )
        node.supervisor.watch(
            "intake",
            running=lambda: intake.healthy,
            progress=lambda: intake.received,
        )
        node.collector.deliveries = lambda: committed.published
        try:
            await node.serve_health()
        finally:
            # No new batches; the next owners start at once (or after the TTL, without NATS).
            await node.leave("releasing the leases", leases.stop, lambda: leases.stop(release=False))
            try:
                async with asyncio.timeout(_SETTLE_AT_SHUTDOWN_S):
                    await intake.settled()
            except TimeoutError:
                logger.warning("batches left unsettled at shutdown; their next owner commits them")
            await intake.close()
            await inboxes.close()
