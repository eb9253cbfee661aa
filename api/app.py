"""The FastAPI application: accounts, login and (later) conversations and history."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import async_sessionmaker

from api.db import create_engine, migrate
from api.errors import install_error_handlers
from api.passwords import Passwords
from api.ratelimit import SlidingWindowLimiter
from api.routers import auth, health, users
from api.schemas import BrokerEndpoint
from api.state import AppState
from config import Settings
from hubbub.ids import SnowflakeGenerator
from hubbub.tokens import TokenCodec

__all__ = ["create_app"]

_LOGIN_WINDOW_S = 60.0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def create_app(settings: Settings, *, secret: str, broker: BrokerEndpoint) -> FastAPI:
    """The API for ``settings``; its database is opened and migrated in the lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.resolved_database_url)
        await migrate(engine)
        app.state.hubbub = AppState(
            settings=settings,
            engine=engine,
            sessions=async_sessionmaker(engine, expire_on_commit=False),
            tokens=TokenCodec(secret, access_ttl_s=settings.access_token_ttl_s),
            passwords=Passwords(),
            login_limiter=SlidingWindowLimiter(settings.login_attempts_per_minute, _LOGIN_WINDOW_S),
            address_limiter=SlidingWindowLimiter(
                settings.login_attempts_per_address_per_minute, _LOGIN_WINDOW_S
            ),
            ids=SnowflakeGenerator(settings.node_id),
            broker=broker,
            clock_ms=_now_ms,
        )
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(title="Hubbub", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    for router in (health.router, users.router, auth.router):
        app.include_router(router)
    return app
