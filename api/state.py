"""What the API's handlers share, built once in the lifespan and handed out as dependencies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from api.passwords import Passwords
from api.ratelimit import FailureBackoff, SlidingWindowLimiter
from api.schemas import BrokerEndpoint
from config import Settings
from hubbub.ids import SnowflakeGenerator
from hubbub.sessions import LiveConnections
from hubbub.stores import InboxPublisher, MessageStore, MessageSubmitter, PresenceView
from hubbub.tokens import TokenCodec

__all__ = ["AppState", "ReadRunner"]

_T = TypeVar("_T")


class ReadRunner(Protocol):
    """Runs a read on a connection of an engine, again on another if the server had closed that one.

    ``persister.sql_database.retried_read``, passed in by the launcher: its connection skips the
    checkout's ping, which every other checkout pays.
    """

    def __call__(
        self, engine: AsyncEngine, read: Callable[[AsyncConnection], Awaitable[_T]], /
    ) -> Awaitable[_T]:
        """What ``read`` returned."""
        ...


@dataclass(frozen=True, slots=True)
class AppState:
    """The API's collaborators; tests and the launcher build them the same way."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    reads: AsyncEngine
    """The engine in autocommit: one read statement without BEGIN and COMMIT round trips."""
    run_read: ReadRunner
    """How a read on ``reads`` runs: on a connection not pinged first, again if it was dead."""
    tokens: TokenCodec
    passwords: Passwords
    login_backoff: FailureBackoff
    address_limiter: SlidingWindowLimiter
    ids: SnowflakeGenerator
    broker: BrokerEndpoint
    clock_ms: Callable[[], int]
    messages: MessageStore
    inbox: InboxPublisher
    live_connections: LiveConnections
    submitter: MessageSubmitter
    presence: PresenceView
    vapid_public_key: str | None
    metrics: Callable[[], bytes]
    discover_brokers: Callable[[], list[BrokerEndpoint]]
    """The live broker nodes, least loaded first (cluster: the registry); empty: only ``broker``."""
    brokers_max_age_s: float
    """How stale ``discover_brokers`` may be (the registry's refresh period; 0 on one node)."""
    health_problems: Callable[[], list[str]]
    """What is wrong with this process beyond its database (NATS, supervised loops); empty: nothing."""

    def brokers(self) -> list[BrokerEndpoint]:
        """Where devices connect, least loaded first: the live broker nodes, else ``broker``."""
        return self.discover_brokers() or [self.broker]
