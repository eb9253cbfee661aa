"""The cassandra-driver as this store uses it: one cluster connection, asyncio on top.

The driver's authors advise one ``Cluster`` and one ``Session`` per process, prepared
statements, token-aware routing and asynchronous execution; ``connect_session`` builds that
connection, and ``wait``/``pages`` bridge the driver's ``ResponseFuture`` (completed on its
IO thread) to asyncio without blocking the loop. cassandra-driver ships neither type hints
nor a py.typed marker: the few calls made on its objects are described by the Protocols here.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol, TypeVar

from cassandra import ConsistencyLevel, ProtocolVersion  # type: ignore[import-untyped]
from cassandra.cluster import (  # type: ignore[import-untyped]
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
)
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy  # type: ignore[import-untyped]

__all__ = [
    "DEFAULT_PORT",
    "IN_KEYS",
    "Row",
    "Session",
    "check_keyspace",
    "connect_session",
    "consistency_level",
    "contact_point",
    "fetch_all",
    "in_lists",
    "pages",
    "run_all",
    "wait",
]

logger = logging.getLogger(__name__)

DEFAULT_PORT = 9042
_KEYSPACE = re.compile(r"[a-z][a-z0-9_]{0,47}")
# Requests in flight per call: enough to hide round trips, few enough not to swamp the pools.
_CONCURRENCY = 64
# Keys a multi-key read (``... IN ?``) asks for at once: one request, and a bounded fan-out on its
# coordinator (Cassandra advises against long IN lists of partition keys).
IN_KEYS = 100

Row = tuple[Any, ...]
_T = TypeVar("_T")


class ResponseFuture(Protocol):  # cassandra.cluster.ResponseFuture
    """A request in flight."""

    @property
    def has_more_pages(self) -> bool: ...
    # With this store's profile a page is a list of tuples; a write's result is None.
    def add_callbacks(
        self, callback: Callable[[list[Row] | None], None], errback: Callable[[BaseException], None]
    ) -> object: ...
    def clear_callbacks(self) -> None: ...
    def start_fetching_next_page(self) -> None: ...


class Prepared(Protocol):  # cassandra.query.PreparedStatement
    """A prepared statement."""

    is_idempotent: bool
    serial_consistency_level: int | None

    def bind(self, values: Sequence[object]) -> object: ...


class _Cluster(Protocol):  # cassandra.cluster.Cluster
    def shutdown(self) -> None: ...


class Session(Protocol):  # cassandra.cluster.Session
    """The driver's session: its cluster, statement preparation and asynchronous execution."""

    @property
    def cluster(self) -> _Cluster:
        """The cluster connection the session belongs to."""
        ...

    def prepare(self, query: str) -> Prepared:
        """Prepare ``query`` on every node (blocks)."""
        ...

    def execute_async(
        self, query: object, parameters: object = None, *, execution_profile: object = ...
    ) -> ResponseFuture:
        """Send ``query``; the driver's IO thread completes the future."""
        ...

    def execution_profile_clone_update(self, ep: object, **kwargs: object) -> object:
        """A copy of execution profile ``ep`` with ``kwargs`` changed."""
        ...


def consistency_level(name: str) -> int:
    """``"LOCAL_QUORUM"`` (any ``ConsistencyLevel`` name, any case) as the driver's value."""
    try:
        return int(ConsistencyLevel.name_to_value[name.upper()])
    except KeyError:
        names = ", ".join(sorted(ConsistencyLevel.name_to_value))
        raise ValueError(f"unknown Cassandra consistency level {name!r}; one of {names}") from None


def contact_point(host: str) -> tuple[str, int]:
    """``"host[:port]"`` (``"[v6]:port"`` for IPv6) as the driver's ``(host, port)``."""
    name, colon, port = host.strip().rpartition(":")
    if not colon or (name.count(":") and not name.endswith("]")):
        return host.strip().strip("[]"), DEFAULT_PORT
    try:
        return name.strip("[]"), int(port)
    except ValueError as exc:
        raise ValueError(f"bad Cassandra host {host!r}: the port is not a number") from exc


def check_keyspace(name: str) -> str:
    """``name`` if CQL reads it unquoted as itself (it is interpolated into statements)."""
    if not _KEYSPACE.fullmatch(name):
        raise ValueError(f"keyspace must match {_KEYSPACE.pattern}, got {name!r}")
    return name


async def connect_session(hosts: Sequence[str], *, consistency: int, local_dc: str | None = None) -> Session:
    """A session on a new token-aware cluster connection to ``hosts`` (``host[:port]``).

    Requests go to a replica of their partition (token-aware) in ``local_dc`` (by default
    the data centre of the first contact point). Raises ``ConnectionError`` with the
    driver's error as cause when no host answers.
    """
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=local_dc)),
        consistency_level=consistency,
    )
    cluster = Cluster(
        contact_points=[contact_point(host) for host in hosts],
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        protocol_version=ProtocolVersion.V5,  # Cassandra 4.0 and later; set, not negotiated down
    )
    try:
        session: Session = await asyncio.to_thread(cluster.connect)  # blocks while it discovers the ring
    except Exception as exc:
        await asyncio.to_thread(cluster.shutdown)  # idempotent: the driver may have done it already
        raise ConnectionError(f"cannot connect to Cassandra at {', '.join(hosts)}") from exc
    logger.info("connected to Cassandra at %s", ", ".join(hosts))
    return session


def in_lists(items: Sequence[_T]) -> list[list[_T]]:
    """``items`` (distinct) cut into the lists of at most ``IN_KEYS`` that multi-key reads bind."""
    return [list(items[start : start + IN_KEYS]) for start in range(0, len(items), IN_KEYS)]


async def wait(response: ResponseFuture) -> list[Row] | None:
    """The result of ``response`` without blocking the loop: the driver's IO thread calls back."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[list[Row] | None] = loop.create_future()

    def settle(result: list[Row] | None, error: BaseException | None) -> None:
        if done.done():  # the awaiting task was cancelled
            return
        if error is None:
            done.set_result(result)
        else:
            done.set_exception(error)

    def hand_over(result: list[Row] | None, error: BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop closed while the request was in flight: nobody waits
            logger.debug("dropped a Cassandra response for a closed event loop")

    response.add_callbacks(lambda result: hand_over(result, None), lambda error: hand_over(None, error))
    return await done


async def pages(
    session: Session, statement: object, profile: object = EXEC_PROFILE_DEFAULT
) -> AsyncIterator[list[Row]]:
    """Each page of a statement's rows, fetching the next only when the previous is consumed."""
    response = session.execute_async(statement, execution_profile=profile)
    while True:
        yield list(await wait(response) or ())
        if not response.has_more_pages:
            return
        # Callbacks survive a page turn; clear them first so each page settles one future.
        response.clear_callbacks()
        response.start_fetching_next_page()


async def fetch_all(session: Session, statement: object, profile: object = EXEC_PROFILE_DEFAULT) -> list[Row]:
    """Every row of ``statement`` (all its pages)."""
    return [row async for page in pages(session, statement, profile) for row in page]


async def run_all(session: Session, statements: Sequence[object], profile: object) -> list[list[Row]]:
    """Every statement's rows, ``_CONCURRENCY`` at most in flight; the first failure once all ended."""
    limiter = asyncio.Semaphore(_CONCURRENCY)

    async def one(statement: object) -> list[Row]:
        async with limiter:
            return await fetch_all(session, statement, profile)

    outcomes = await asyncio.gather(*(one(s) for s in statements), return_exceptions=True)
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if failures:
        logger.warning("%d of %d Cassandra requests failed", len(failures), len(statements))
        raise failures[0]
    return [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
