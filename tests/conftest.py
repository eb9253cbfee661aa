"""Session fixtures: the real platform on SQLite, and again on real PostgreSQL and Cassandra servers.

Cassandra and the clean clone's ``make run`` start in the background at idle priority as the
session begins (``pytest_collection_finish``), when a collected test needs them: their minutes of
start-up overlap the tests before their first user instead of adding to the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from build_compiled import compiled_files, stale_modules
from tests.support.api import ApiClient
from tests.support.cassandra import CassandraServer, launch_cassandra, start_cassandra
from tests.support.chat import ClientFactory, client_factory
from tests.support.clean_clone import CleanCloneRun, start_make_run_in_clean_clone
from tests.support.early import EarlyStart
from tests.support.platform import Platform, start_platform
from tests.support.postgres import PostgresServer, start_postgres
from tests.support.processes import IDLE_PRIORITY


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to test old code: a compiled module older than its source is what Python would import."""
    del config
    stale = stale_modules()
    if stale:
        raise pytest.UsageError(
            f"compiled modules are older than their sources ({', '.join(stale)}): the tests would run "
            "the old code. Run `make compile` (or `make interpreted` to test from source)."
        )


def pytest_report_header() -> str:
    """Which build of the hot path runs (``build_compiled.py``)."""
    return "hot path: compiled (mypyc)" if compiled_files() else "hot path: interpreted (no build)"


# What launching a set-up started early may take (a clone, a Popen) before the test asking fails.
_LAUNCH_S = 180.0
_early_cassandra: list[EarlyStart[CassandraServer]] = []
_early_clone: list[EarlyStart[CleanCloneRun]] = []


def _needs(item: pytest.Item, name: str) -> bool:
    """Whether ``item`` asks for the fixture ``name``, or is a parameter case named after it."""
    callspec = getattr(item, "callspec", None)
    params: dict[str, Any] = callspec.params if callspec is not None else {}
    return name in getattr(item, "fixturenames", ()) or name in params.values()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start Cassandra and the clean clone's ``make run`` now if a test to run needs them."""
    if session.config.option.collectonly:
        return
    if any(_needs(item, "cassandra") for item in session.items):
        _early_cassandra.append(EarlyStart("cassandra", lambda: launch_cassandra(niceness=IDLE_PRIORITY)))
    if any(_needs(item, "clean_clone_run") for item in session.items):
        _early_clone.append(EarlyStart("clean-clone", start_make_run_in_clean_clone))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop what was started early for tests that never ran (a run cut short by ``-x`` or a failure)."""
    del session
    for cassandra in _early_cassandra:
        cassandra.discard(CassandraServer.stop, _LAUNCH_S)
    for clone in _early_clone:
        clone.discard(CleanCloneRun.stop, _LAUNCH_S)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cassandra() -> Iterator[CassandraServer]:
    """One Apache Cassandra node for the session (each test uses keyspaces of its own).

    Launched early at idle priority (its JVM's start takes only what other tests leave idle), at
    normal priority from the moment a test needs it.
    """
    if not _early_cassandra:
        server = start_cassandra()
    else:
        server = _early_cassandra[0].result(_LAUNCH_S)
        server.process.renice(0)
        server.wait_ready()
    yield server
    server.stop()


@pytest.fixture
def clean_clone_run() -> Iterator[CleanCloneRun]:
    """README's ``make run`` in a fresh clone (started early, niced; normal priority from now on)."""
    run = _early_clone[0].result(_LAUNCH_S) if _early_clone else start_make_run_in_clean_clone()
    run.hurry()
    yield run
    run.stop()


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """``hubbub up`` on SQLite, shared by the tests of a session (each uses its own users)."""
    running = start_platform(tmp_path_factory.mktemp("platform"))
    yield running
    assert running.stop() == 0, running.process.log()


@pytest.fixture(scope="session")
def pg_platform(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Platform]:
    """``hubbub up`` with its account store on PostgreSQL."""
    running = start_platform(
        tmp_path_factory.mktemp("pg-platform"), extra_env={"HUBBUB_DATABASE_URL": postgres.url}
    )
    yield running
    assert running.stop() == 0, running.process.log()


@pytest.fixture(params=["sqlite", "postgres"])
def any_platform(request: pytest.FixtureRequest) -> Platform:
    """The same test against each account-store backend."""
    name = "platform" if request.param == "sqlite" else "pg_platform"
    running: Platform = request.getfixturevalue(name)
    return running


@pytest.fixture
def api(platform: Platform) -> Iterator[ApiClient]:
    client = ApiClient(platform.http_url)
    yield client
    client.close()


@pytest.fixture
def any_api(any_platform: Platform) -> Iterator[ApiClient]:
    client = ApiClient(any_platform.http_url)
    yield client
    client.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def clients(platform: Platform) -> Iterator[ClientFactory]:
    """Python clients (``client/``) of new users on the shared platform, closed after the test."""
    with client_factory(platform.http_url) as make:
        yield make
