"""One node: everything in one process (``up``), or the broker and the API apart without NATS.

Without ``HUBBUB_NATS_URL`` the hand-offs are in-process: the broker runs ingest, the persister
and push beside the MQTT server; an API apart from it (``hubbub api``) shares the database only
(``launcher.detached``). A cluster's processes are composed in ``launcher.cluster_*``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import async_sessionmaker
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.staticfiles import StaticFiles

from api import BrokerEndpoint, SqlDeviceSessions, SqlDirectory, SqlPushDirectory
from api.app import create_app
from broker_plugins import HubbubBroker, WebSocketBridge
from config import Settings
from hubbub.envelope import CommitResult
from hubbub.events import push_register_again_event
from hubbub.sessions import DeviceSessions, LiveConnections, SignedInDevices
from hubbub.stores import PushToken
from launcher.detached import BrokerElsewhere
from launcher.foundation import Foundation, foundation, ingest_limits, mqtt_server
from launcher.http import bind_socket
from launcher.push import build_providers, prune_deliveries
from launcher.serving import WS_PATH, serve_until_stopped, uvicorn_server
from messaging import LoopClock, MessagingCore
from notifier.deliveries import SqlDeliveryLog
from notifier.dispatcher import Dispatcher
from notifier.metrics import PushMetrics
from notifier.planner import PushPlanner
from persister import Persister
from persister.local_log import LocalAcceptedLog

__all__ = ["Messaging", "one_node_messaging", "run_api", "run_broker", "run_up"]

logger = logging.getLogger(__name__)

_ACCEPTED_QUEUE = 10_000
_FLUSH_TIMEOUT_S = 30.0  # at shutdown, for what ingest accepted to be committed and delivered


@dataclass(frozen=True)
class Messaging:
    """The running message pipeline, and what the API shows of it."""

    broker: HubbubBroker
    core: MessagingCore
    live_connections: LiveConnections  # the core's, forgetting an ended device's sign-in first
    metrics: Callable[[], bytes]
    vapid_public_key: str


@asynccontextmanager
async def one_node_messaging(core: Foundation, *, api_here: bool) -> AsyncIterator[Messaging]:
    """The MQTT server and the messaging core, the persister behind them, and push after commits.

    ``api_here``: the API runs in this process, so every ended device is heard of here and the
    broker may remember signed-in devices (``SignedInDevices``); an API apart is not heard.
    """
    settings = core.settings
    accepted = LocalAcceptedLog(_ACCEPTED_QUEUE)
    sessions = async_sessionmaker(core.engine, expire_on_commit=False)
    directory = SqlDirectory(sessions)
    device_store = SqlDeviceSessions(sessions, own_sqlite_reader=True)
    signed_in = SignedInDevices(device_store) if api_here else None
    devices: DeviceSessions = signed_in or device_store
    broker = mqtt_server(core, directory, devices)
    messaging_core = MessagingCore(
        connections=broker,
        directory=directory,
        accepted=accepted,
        ids=core.ids,
        limits=ingest_limits(settings),
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

    # One commit at a time, at most one per 2 ms: the next batch gathers what is accepted meanwhile
    # (fewer, larger commits; ``Persister``'s ``min_commit_interval_s`` says why).
    persister = Persister(
        core.store,
        accepted,
        committed,
        on_failed=messaging_core.commit_failed,
        commits_in_flight=1,
        min_commit_interval_s=0.002,
    )
    await broker.start(events=messaging_core)
    try:
        async with asyncio.TaskGroup() as group:
            background = [
                group.create_task(persister.run(), name="persister"),
                group.create_task(dispatcher.run(), name="push-dispatcher"),
                group.create_task(planner.run(), name="push-planner"),
                group.create_task(prune_deliveries(deliveries), name="push-deliveries-pruning"),
            ]
            try:
                live = messaging_core if signed_in is None else signed_in.forget_on_end(messaging_core)
                yield Messaging(broker, messaging_core, live, metrics.render, providers.vapid_public_key)
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
        await device_store.close()  # its SQLite reader's thread and connection, now nothing asks it
        for provider in (*providers.native, providers.fallback):
            await provider.close()


async def run_up(settings: Settings) -> None:
    """Broker, persister, API and MQTT over WebSocket in one process, sharing one HTTP port."""
    async with foundation(settings) as core, one_node_messaging(core, api_here=True) as messaging:
        broker = messaging.broker
        http_socket = bind_socket(settings.bind, settings.http_port)
        host = settings.advertised_host
        endpoint = BrokerEndpoint(
            host=host, port=broker.mqtt_port, ws_url=f"ws://{host}:{http_socket.getsockname()[1]}{WS_PATH}"
        )
        app = create_app(
            settings,
            tokens=core.tokens,
            engine=core.engine,
            reads=core.reads,
            ids=core.ids,
            broker=endpoint,
            messages_store=core.store,
            inbox=messaging.core,
            submitter=messaging.core,
            presence_view=messaging.core,
            live_connections=messaging.live_connections,
            metrics=messaging.metrics,
            vapid_public_key=messaging.vapid_public_key,
        )
        app.add_api_websocket_route(WS_PATH, WebSocketBridge(broker).serve)
        if settings.web_dir.is_dir():
            app.mount("/", StaticFiles(directory=settings.web_dir, html=True), name="web")
        else:
            logger.warning("no web chat at %s: run `make web` to build it", settings.web_dir)
        await serve_until_stopped(
            uvicorn_server(app, settings), http_socket, mqtt=f"{settings.bind}:{broker.mqtt_port}"
        )


async def run_broker(settings: Settings) -> None:
    """The broker (with ingest and the persister): MQTT over TCP, and WebSocket on ``broker_ws_port``."""
    async with foundation(settings) as core, one_node_messaging(core, api_here=False) as messaging:
        broker = messaging.broker
        ws_app = Starlette(routes=[WebSocketRoute(WS_PATH, WebSocketBridge(broker).serve)])
        sock = bind_socket(settings.bind, settings.broker_ws_port)
        await serve_until_stopped(
            uvicorn_server(ws_app, settings), sock, mqtt=f"{settings.bind}:{broker.mqtt_port}"
        )


async def run_api(settings: Settings) -> None:
    """The REST API alone; it tells devices where the broker is from the settings."""
    async with foundation(settings) as core:
        host = settings.advertised_host
        endpoint = BrokerEndpoint(
            host=host, port=settings.mqtt_port, ws_url=f"ws://{host}:{settings.broker_ws_port}{WS_PATH}"
        )
        elsewhere = BrokerElsewhere()
        app = create_app(
            settings,
            tokens=core.tokens,
            engine=core.engine,
            reads=core.reads,
            ids=core.ids,
            broker=endpoint,
            messages_store=core.store,
            inbox=elsewhere,
            submitter=elsewhere,
            presence_view=elsewhere,
            live_connections=elsewhere,
            metrics=PushMetrics().render,
        )
        await serve_until_stopped(
            uvicorn_server(app, settings), bind_socket(settings.bind, settings.http_port)
        )
