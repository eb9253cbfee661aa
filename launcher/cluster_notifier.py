"""``hubbub notifier``: pushes for the conversation shards it leases, in a cluster.

Composed of ``NatsCommittedFeed`` driven by the lease group ``notifier`` over the conversation
shards (per owned shard the durable consumer of ``HUBBUB_COMMITTED``, batches acked once every
push they caused is over), the ``PushPlanner`` (members from the account database, cached and forgotten on
``hubbub.membership.changed``; who is online from the cluster's presence mirror) and the
``Dispatcher`` with the providers the settings configure and the two-phase delivery log, so a
push is sent at most once per (message, token) even when a notifier dies mid-batch. A token a
provider rejects for good is removed, and its device hears it on its inbox if it is connected.
``/healthz`` and ``/metrics`` (push counters, lag per owned shard) on ``http_port``.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import async_sessionmaker

from api import SqlDirectory, SqlPushDirectory
from cluster.committed import ensure_committed_stream
from cluster.inbox import NatsInboxes, follow_membership_changes, forget_memberships_on_reconnect
from cluster.push_feed import LEASE_GROUP, NatsCommittedFeed
from config import Settings
from hubbub import subjects
from hubbub.events import push_register_again_event
from hubbub.stores import PushToken
from launcher.cluster_node import cluster_node, retrying
from launcher.cluster_parts import presence_mirror
from launcher.foundation import foundation, ingest_limits
from launcher.push import build_providers, prune_deliveries, shared_vapid_key
from messaging import LoopClock
from messaging.membership import MembershipCache
from notifier.deliveries import SqlDeliveryLog
from notifier.dispatcher import Dispatcher
from notifier.metrics import PushMetrics
from notifier.planner import PushPlanner

__all__ = ["run_cluster_notifier"]

logger = logging.getLogger(__name__)

_SETTLE_AT_SHUTDOWN_S = 30.0


async def run_cluster_notifier(settings: Settings) -> None:
    """A notifier node: pushes for the shards it leases; released and settled on a graceful stop."""
    async with foundation(settings) as core, cluster_node(settings, "notifier") as node:
        connection = node.connection
        sessions = async_sessionmaker(core.engine, expire_on_commit=False)
        directory = SqlDirectory(sessions)
        membership = MembershipCache(directory, LoopClock(), ingest_limits(settings).membership_ttl_s)
        await follow_membership_changes(connection.client, membership.forget)
        forget_memberships_on_reconnect(connection.state, membership.forget_all)
        mirror = await presence_mirror(connection, settings, directory)
        inboxes = NatsInboxes(connection.client)
        vapid = await retrying("sharing the VAPID key", lambda: shared_vapid_key(connection.js, settings))
        providers = build_providers(settings, vapid)
        push_directory = SqlPushDirectory(sessions, core.store)

        async def remove_token(token: PushToken) -> None:
            user_id = await push_directory.remove_token(token.token_id)
            if user_id is not None:  # the token id is its device's id
                inboxes.to_inbox(user_id, push_register_again_event(), only_device=token.token_id)

        deliveries = SqlDeliveryLog(core.engine)
        dispatcher = Dispatcher(
            providers=providers.native,
            default_provider=providers.fallback,
            remove_token=remove_token,
            delivery_log=deliveries,
            metrics=PushMetrics(node.metrics),
            coalesce_window=settings.push_coalesce_window_s,
        )
        await retrying(
            "creating the committed stream",
            lambda: ensure_committed_stream(connection.js, settings.nats_replicas),
        )
        feed = NatsCommittedFeed(connection.js, ack_wait_s=settings.push_ack_wait_s)
        feed.start()
        leases = await node.lease_group(
            LEASE_GROUP,
            settings.conversation_shards,
            on_gained=feed.gained,
            on_lost=feed.lost,
            lag_stream=subjects.COMMITTED_STREAM,
        )
        lag = node.collector.lags[-1]  # idle is fine; a backlog its consumers do not fetch is not
        planner = PushPlanner(
            push_directory, dispatcher, members=membership.members, online=mirror.online, feed=feed
        )
        node.supervisor.add("push-dispatcher", dispatcher.run)
        node.supervisor.add(
            "push-planner", planner.run, progress=lambda: feed.fetched, probe=lag.nothing_undelivered
        )
        node.supervisor.add("push-deliveries-pruning", lambda: prune_deliveries(deliveries))
        node.supervisor.watch("push-feed", running=lambda: feed.healthy)
        node.supervisor.watch("presence-mirror", running=lambda: mirror.running)
        try:
            await node.serve_health()
        finally:
            # No new batches; the next owners start at once (or after the TTL, without NATS).
            await node.leave("releasing the notifier leases", leases.stop, lambda: leases.stop(release=False))
            await feed.close()
            try:
                async with asyncio.timeout(_SETTLE_AT_SHUTDOWN_S):
                    await feed.wait_settled()
            except TimeoutError:
                logger.warning("push batches left unsettled at shutdown; their next owner takes them")
            for provider in (*providers.native, providers.fallback):
                await provider.close()
            await mirror.stop()
            await inboxes.close()
