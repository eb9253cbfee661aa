"""Running the platform: everything in one process (``up``) or one part each."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.staticfiles import StaticFiles

from api import BrokerEndpoint, SqlDeviceSessions, SqlDirectory, SqlPushDirectory, create_app
from broker_plugins import BrokerOptions, HubbubBroker, WebSocketBridge
from config import Settings, resolve_secret
from hubbub.envelope import CommitResult
from hubbub.events import push_register_again_event
from hubbub.ids import SnowflakeGenerator
from hubbub.stores import MessageStore, PushToken
from hubbub.tokens import TokenCodec
from launcher.detached import BrokerElsewhere
from launcher.http import ReadyServer, bind_socket
from launcher.migrate import migrate
from launcher.push import build_providers
from messaging import IngestLimits, LoopClock, MessagingCore
from notifier.deliveries import SqlDeliveryLog
from notifier.dispatcher import Dispatcher
from notifier.metrics import PushMetrics
from notifier.planner import PushPlanner
from persister import Persister, SqlMessageStore, cassandra_store
from persister.local_log import LocalAcceptedLog
from persister.sql_database import create_engine, message_committer

__all__ = ["run_api", "run_broker", "run_up"]

logger = logging.getLogger(__name__)

_WS_PATH = "/mqtt"
# A WebSocket frame may carry one whole MQTT packet plus its framing.
_WS_FRAME_OVERHEAD = 16
_ACCEPTED_QUEUE = 10_000


def _announce(**endpoints: str) -> None:
    """One line on stdout when everything listens: for people, scripts and tests."""
    print("hubbub ready:", " ".join(f"{name}={value}" for name, value in endpoints.items()), flush=True)  # noqa: T201


def _uvicorn(app: object, settings: Settings) -> ReadyServer:
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_config=None,
        access_log=False,
        http=ReadyServer.http_protocol,  # idle/slow connections closed, caps (launcher/http_guard.py)
        ws=ReadyServer.ws_protocol,
        ws_max_size=settings.max_packet_bytes + _WS_FRAME_OVERHEAD,
        ws_ping_interval=None,  # MQTT has its own keepalive
        proxy_headers=False,  # X-Forwarded-For: believed only from HUBBUB_TRUSTED_PROXIES (api/ratelimit.py)
        lifespan="on",
    )
    return ReadyServer(config, settings)


async def _serve_until_stopped(server: ReadyServer, sock: socket.socket, **announce: str) -> None:
    """Serve HTTP on ``sock`` until a signal stops uvicorn; announce once it is ready."""
    host, port = sock.getsockname()[:2]
    async with asyncio.TaskGroup() as group:
        serving = group.create_task(server.serve(sockets=[sock]), name="http-server")
        ready = group.create_task(server.ready.wait(), name="http-ready")
        await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            _announce(**announce, http=f"http://{host}:{port}")
        else:
            ready.cancel()


@dataclass(frozen=True)
class _Core:
    """The parts every process shares: settings-derived secrets, ids and the database."""

    settings: Settings
    tokens: TokenCodec
    engine: AsyncEngine
    ids: SnowflakeGenerator
    store: MessageStore


@asynccontextmanager
async def _core(settings: Settings) -> AsyncIterator[_Core]:
    tokens = TokenCodec(resolve_secret(settings), access_ttl_s=settings.access_token_ttl_s)
    engine = create_engine(settings.resolved_database_url)
    try:
        await migrate(engine)
        store = await _message_store(settings, engine)
        try:
            yield _Core(settings, tokens, engine, SnowflakeGenerator(settings.node_id), store)
        finally:
            await store.close()
    finally:
        await engine.dispose()


async def _message_store(settings: Settings, engine: AsyncEngine) -> MessageStore:
    """History in Cassandra when hosts are configured, else in the SQL database beside accounts."""
    if not settings.cassandra_hosts:
        return SqlMessageStore(engine, message_committer(engine, log_level=settings.log_level))
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


_PRUNE_EVERY_S = 3600.0
_FLUSH_TIMEOUT_S = 30.0  # at shutdown, for what ingest accepted to be committed and delivered
# Push claims are kept long past any redelivery of a message, then forgotten.
_DELIVERY_MEMORY_S = 2 * 86_400.0


async def _prune_deliveries(deliveries: SqlDeliveryLog) -> None:
    """Keep the push-delivery table small: claims matter only while a message may be retried."""
    while True:
        try:
            removed = await deliveries.prune(older_than_s=_DELIVERY_MEMORY_S)
        except Exception:  # a failed clean-up must not take the pipeline down; next hour again
            logger.exception("pruning old push deliveries failed")
        else:
            if removed:
                logger.info("forgot %d old push deliveries", removed)
        await asyncio.sleep(_PRUNE_EVERY_S)


@dataclass(frozen=True)
class _Messaging:
    """The running message pipeline, and what the API shows of it."""

    broker: HubbubBroker
    core: MessagingCore
    metrics: Callable[[], bytes]
    vapid_public_key: str


@asynccontextmanager
async def _messaging(core: _Core) -> AsyncIterator[_Messaging]:
    """The MQTT server and the messaging core, the persister behind them, and push after commits."""
    settings = core.settings
    accepted = LocalAcceptedLog(_ACCEPTED_QUEUE)
    sessions = async_sessionmaker(core.engine, expire_on_commit=False)
    directory = SqlDirectory(sessions)
    broker = HubbubBroker(
        BrokerOptions(
            bind=settings.bind,
            mqtt_port=settings.mqtt_port,
            max_packet_bytes=settings.max_packet_bytes,
            connect_timeout_s=settings.connect_timeout_s,
        ),
        tokens=core.tokens,
        relations=directory,
        devices=SqlDeviceSessions(sessions),
    )
    messaging_core = MessagingCore(
        connections=broker,
        directory=directory,
        accepted=accepted,
        ids=core.ids,
        limits=IngestLimits(
            max_chars=settings.max_message_chars,
            sends_per_second=settings.sends_per_second,
            send_burst=settings.send_burst,
        ),
        presence_grace_s=settings.presence_grace_s,
        clock=LoopClock(),
    )
    providers = build_providers(settings)
    push_directory = SqlPushDirectory(sessions, core.store)
    metrics = PushMetrics()
    metrics.registry.register(broker.collector())  # /metrics shows what the broker shed

    async def remove_token(token: PushToken) -> None:
        user_id = await push_directory.remove_token(token.token_id)
        if user_id is not None:  # the token id is its device's id
            messaging_core.notify_device(user_id, token.token_id, push_register_again_event())

    deliveries = SqlDeliveryLog(core.engine)
    dispatcher = Dispatcher(
        providers=providers.native,
        default_provider=providers.fallback,
        remove_token=remove_token,
        delivery_log=deliveries,
        metrics=metrics,
        coalesce_window=settings.push_coalesce_window_s,
    )
    planner = PushPlanner(
        push_directory, dispatcher, members=messaging_core.members, online=messaging_core.online
    )

    async def committed(results: Sequence[CommitResult]) -> None:
        await messaging_core.committed(results)
        planner.committed(results)

    persister = Persister(core.store, accepted, committed, on_failed=messaging_core.commit_failed)
    await broker.start(events=messaging_core)
    try:
        async with asyncio.TaskGroup() as group:
            background = [
                group.create_task(persister.run(), name="persister"),
                group.create_task(dispatcher.run(), name="push-dispatcher"),
                group.create_task(planner.run(), name="push-planner"),
                group.create_task(_prune_deliveries(deliveries), name="push-deliveries-pruning"),
            ]
            try:
                yield _Messaging(broker, messaging_core, metrics.render, providers.vapid_public_key)
            finally:
                await broker.shutdown()
                await messaging_core.close()
                try:
                    async with asyncio.timeout(_FLUSH_TIMEOUT_S):
                        await persister.flush()
                except TimeoutError:
                    logger.warning("accepted messages left uncommitted at shutdown; senders will resend")
                for task in background:
                    task.cancel()
    finally:
        await broker.shutdown()  # idempotent: for a failure before the pipeline ran
        for provider in (*providers.native, providers.fallback):
            await provider.close()


async def run_up(settings: Settings) -> None:
    """Broker, persister, API and MQTT over WebSocket in one process, sharing one HTTP port."""
    async with _core(settings) as core, _messaging(core) as messaging:
        broker = messaging.broker
        http_socket = bind_socket(settings.bind, settings.http_port)
        host = settings.advertised_host
        endpoint = BrokerEndpoint(
            host=host, port=broker.mqtt_port, ws_url=f"ws://{host}:{http_socket.getsockname()[1]}{_WS_PATH}"
        )
        app = create_app(
            settings,
            tokens=core.tokens,
            engine=core.engine,
            ids=core.ids,
            broker=endpoint,
            messages_store=core.store,
            inbox=messaging.core,
            submitter=messaging.core,
            presence_view=messaging.core,
            live_connections=messaging.core,
            metrics=messaging.metrics,
            vapid_public_key=messaging.vapid_public_key,
        )
        app.add_api_websocket_route(_WS_PATH, WebSocketBridge(broker).serve)
        if settings.web_dir.is_dir():
            app.mount("/", StaticFiles(directory=settings.web_dir, html=True), name="web")
        else:
            logger.warning("no web chat at %s: run `make web` to build it", settings.web_dir)
        await _serve_until_stopped(
            _uvicorn(app, settings), http_socket, mqtt=f"{settings.bind}:{broker.mqtt_port}"
        )


async def run_broker(settings: Settings) -> None:
    """The broker (with ingest and the persister): MQTT over TCP, and WebSocket on ``broker_ws_port``."""
    async with _core(settings) as core, _messaging(core) as messaging:
        broker = messaging.broker
        ws_app = Starlette(routes=[WebSocketRoute(_WS_PATH, WebSocketBridge(broker).serve)])
        sock = bind_socket(settings.bind, settings.broker_ws_port)
        await _serve_until_stopped(
            _uvicorn(ws_app, settings), sock, mqtt=f"{settings.bind}:{broker.mqtt_port}"
        )


async def run_api(settings: Settings) -> None:
    """The REST API alone; it tells devices where the broker is from the settings."""
    async with _core(settings) as core:
        host = settings.advertised_host
        endpoint = BrokerEndpoint(
            host=host, port=settings.mqtt_port, ws_url=f"ws://{host}:{settings.broker_ws_port}{_WS_PATH}"
        )
        elsewhere = BrokerElsewhere()
        app = create_app(
            settings,
            tokens=core.tokens,
            engine=core.engine,
            ids=core.ids,
            broker=endpoint,
            messages_store=core.store,
            inbox=elsewhere,
            submitter=elsewhere,
            presence_view=elsewhere,
            live_connections=elsewhere,
            metrics=PushMetrics().render,
        )
        await _serve_until_stopped(_uvicorn(app, settings), bind_socket(settings.bind, settings.http_port))
