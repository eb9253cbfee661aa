"""What every process of Hubbub stands on: secrets, ids, the databases (migrated)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from api import SqlDirectory
from broker_plugins import BrokerOptions, HubbubBroker
from config import Settings, resolve_secret
from hubbub.ids import SnowflakeGenerator
from hubbub.sessions import DeviceSessions
from hubbub.shards import ShardMap
from hubbub.stores import MessageStore
from hubbub.tokens import TokenCodec
from launcher.migrate import migrate
from messaging import IngestLimits
from persister import SqlMessageStore, cassandra_store
from persister.sql_database import StatementReads, create_engine, is_in_memory, message_committer

__all__ = ["Foundation", "foundation", "ingest_limits", "mqtt_server", "shard_map"]


@dataclass(frozen=True)
class Foundation:
    """The parts every process shares: settings-derived secrets, ids and the database."""

    settings: Settings
    tokens: TokenCodec
    engine: AsyncEngine
    ids: SnowflakeGenerator
    store: MessageStore
    reads: StatementReads
    """The account store's one-statement reads that every device asks at once (a sync's)."""


@asynccontextmanager
async def foundation(settings: Settings, *, node_id: int | None = None) -> AsyncIterator[Foundation]:
    """Secrets, the migrated account database and the message store, closed on exit.

    ``node_id`` (default ``settings.node_id``) goes into every Snowflake id this process makes.
    """
    tokens = TokenCodec(resolve_secret(settings), access_ttl_s=settings.access_token_ttl_s)
    url, busy_s = settings.resolved_database_url, settings.sqlite_busy_timeout_s
    engine = create_engine(url, sqlite_busy_timeout_s=busy_s)
    # History gets a pool of its own: a request holding an account-store session that reads
    # history (sync, badges) would otherwise need a second connection from the same pool, and
    # a burst of them (devices syncing after a node's failover) holds every connection while
    # waiting for one more. An in-memory SQLite database exists once per engine: it shares.
    history_engine = engine if is_in_memory(engine) else create_engine(url, sqlite_busy_timeout_s=busy_s)
    reads = StatementReads(engine)
    try:
        await migrate(engine)
        store = await _message_store(settings, history_engine, reads)
        try:
            ids = SnowflakeGenerator(settings.node_id if node_id is None else node_id)
            yield Foundation(settings, tokens, engine, ids, store, reads)
        finally:
            await store.close()
    finally:
        await reads.close()
        await engine.dispose()
        if history_engine is not engine:
            await history_engine.dispose()


async def _message_store(settings: Settings, engine: AsyncEngine, reads: StatementReads) -> MessageStore:
    """History in Cassandra when hosts are configured, else in the SQL database beside accounts.

    The SQL store's one-statement reads (a sync's catch-up) share ``reads``: the same database, and
    a sync asks the account store's read first, then this one, so one pool (warmed by the API) is
    enough for both.
    """
    if not settings.cassandra_hosts:
        committer = message_committer(
            engine, log_level=settings.log_level, busy_timeout_s=settings.sqlite_busy_timeout_s
        )
        return SqlMessageStore(engine, committer, reads=reads)
    hosts = [host.strip() for host in settings.cassandra_hosts.split(",") if host.strip()]
    store = await cassandra_store.connect(
        hosts,
        settings.cassandra_keyspace,
        consistency=cassandra_store.consistency_level(settings.cassandra_consistency),
        local_dc=settings.cassandra_local_dc,
    )
    try:
        replication = settings.cassandra_replication.strip() or None
        await cassandra_store.migrate(store.session, settings.cassandra_keyspace, replication=replication)
    except BaseException:
        await store.close()
        raise
    return store


def ingest_limits(settings: Settings) -> IngestLimits:
    """What ingest allows a device, the same on every node."""
    return IngestLimits(
        max_chars=settings.max_message_chars,
        sends_per_second=settings.sends_per_second,
        send_burst=settings.send_burst,
    )


def shard_map(settings: Settings) -> ShardMap:
    """The cluster's fixed shard counts."""
    return ShardMap(settings.conversation_shards, settings.presence_shards)


def mqtt_server(core: Foundation, directory: SqlDirectory, devices: DeviceSessions) -> HubbubBroker:
    """The MQTT server of a node, one or many: checks tokens, relations and signed-in devices."""
    settings = core.settings
    return HubbubBroker(
        BrokerOptions(
            bind=settings.bind,
            mqtt_port=settings.mqtt_port,
            max_packet_bytes=settings.max_packet_bytes,
            connect_timeout_s=settings.connect_timeout_s,
        ),
        tokens=core.tokens,
        relations=directory,
        devices=devices,
    )
