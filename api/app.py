"""The FastAPI application: accounts, login, conversations, history and sync."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import ModuleType

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from api.errors import error_responses, install_error_handlers
from api.passwords import Passwords
from api.ratelimit import FailureBackoff, SlidingWindowLimiter
from api.routers import (
    asyncapi,
    auth,
    brokers,
    conversations,
    devices,
    friends,
    health,
    messages,
    presence,
    sync,
    users,
)
from api.schemas import BrokerEndpoint
from api.state import AppState, StatementReader
from config import Settings
from hubbub.ids import SnowflakeGenerator
from hubbub.sessions import LiveConnections
from hubbub.stores import InboxPublisher, MessageStore, MessageSubmitter, PresenceView
from hubbub.tokens import TokenCodec

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

_LOGIN_WINDOW_S = 60.0
_DESCRIPTION = (
    "The REST half of Hubbub: accounts, login, conversations, history, sync, devices. "
    "The MQTT half (topics, events, their schemas) is the AsyncAPI document: "
    "[read it](/asyncapi), or [download asyncapi.json](/asyncapi.json) to generate a client."
)
_LOGIN_BASE_DELAY_S = 1.0


# The errors each router's routes can answer, documented in the OpenAPI document.
_ROUTERS: tuple[tuple[ModuleType, tuple[int, ...]], ...] = (
    (health, ()),
    (users, (401, 404, 409, 422)),
    (auth, (401, 422, 429)),
    (brokers, (401,)),
    (devices, (401, 404, 422)),
    (friends, (401, 404, 422)),
    (presence, (401, 422)),
    (conversations, (401, 403, 404, 409, 422)),
    (messages, (401, 404, 422, 429, 503)),
    (sync, (401, 422)),
    (asyncapi, ()),
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def create_app(
    settings: Settings,
    *,
    tokens: TokenCodec,
    engine: AsyncEngine,
    reads: StatementReader,
    ids: SnowflakeGenerator,
    broker: BrokerEndpoint,
    messages_store: MessageStore,
    inbox: InboxPublisher,
    submitter: MessageSubmitter,
    presence_view: PresenceView,
    metrics: Callable[[], bytes],
    vapid_public_key: str | None = None,
    live_connections: LiveConnections,
    discover_brokers: Callable[[], list[BrokerEndpoint]] = list,
    brokers_max_age_s: float = 0.0,
    health_problems: Callable[[], list[str]] = list,
) -> FastAPI:
    """The API over an already migrated database; its own helpers are built in the lifespan.

    ``reads`` answers the single-statement reads every device asks at once (``GET /v1/sync``'s):
    ``persister.sql_database.StatementReads`` on ``engine``, its owner's to close; warmed up here.

    ``live_connections`` closes an ended device's MQTT connections (the messaging core).
    ``broker`` is where devices connect when ``discover_brokers`` names no node (one node, or a
    cluster's registry with no healthy broker yet), ``brokers_max_age_s`` how old its answer may be
    (the registry's refresh period); ``health_problems`` makes ``/healthz``
    answer 503 with its reasons (the NATS connection and loops of a cluster process).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.hubbub = AppState(
            settings=settings,
            engine=engine,
            sessions=async_sessionmaker(engine, expire_on_commit=False),
            reads=reads,
            tokens=tokens,
            passwords=Passwords(memory_kib=settings.password_hash_memory_kib),
            login_backoff=FailureBackoff(
                free_failures=settings.login_free_failures,
                base_delay_s=_LOGIN_BASE_DELAY_S,
                max_delay_s=settings.login_max_delay_s,
            ),
            address_limiter=SlidingWindowLimiter(
                settings.login_attempts_per_address_per_minute, _LOGIN_WINDOW_S
            ),
            ids=ids,
            broker=broker,
            clock_ms=_now_ms,
            messages=messages_store,
            inbox=inbox,
            live_connections=live_connections,
            submitter=submitter,
            presence=presence_view,
            vapid_public_key=vapid_public_key,
            metrics=metrics,
            discover_brokers=discover_brokers,
            brokers_max_age_s=brokers_max_age_s,
            health_problems=health_problems,
        )
        await reads.warm_up()
        yield

    app = FastAPI(title="Hubbub", version="0.1.0", description=_DESCRIPTION, lifespan=lifespan)
    install_error_handlers(app)
    for module, errors in _ROUTERS:
        app.include_router(module.router, responses=error_responses(*errors))
    return app
