"""What the API's handlers share, built once in the lifespan and handed out as dependencies."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import CompoundSelect, Select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.passwords import Passwords
from api.ratelimit import FailureBackoff, SlidingWindowLimiter
from api.schemas import BrokerEndpoint
from config import Settings
from hubbub.ids import SnowflakeGenerator
from hubbub.sessions import LiveConnections
from hubbub.stores import InboxPublisher, MessageStore, MessageSubmitter, PresenceView
from hubbub.tokens import TokenCodec

__all__ = ["AppState", "StatementReader"]


class StatementReader(Protocol):
    """Runs one read statement of the account store, for the requests every device asks at once.

    ``persister.sql_database.StatementReads``, passed in by the launcher: on PostgreSQL straight on
    asyncpg (no SQLAlchemy execution, no greenlet), read again if the server had closed the
    connection; elsewhere on the engine in autocommit.
    """

    async def rows(
        self,
        statement: Select[*tuple[Any, ...]] | CompoundSelect[*tuple[Any, ...]],
        params: Mapping[str, object],
    ) -> Sequence[Sequence[Any]]:
        """Every row ``statement`` selects with ``params``, its columns in order."""
        ...

    async def warm_up(self) -> None:
        """Open the connections the reads will need, before a failover's syncs all ask at once."""
        ...


@dataclass(frozen=True, slots=True)
class AppState:
    """The API's collaborators; tests and the launcher build them the same way."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    reads: StatementReader
    """One-statement reads on the account store, outside SQLAlchemy's async layer where it can."""
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
