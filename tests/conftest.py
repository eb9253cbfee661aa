"""Session fixtures: the real platform on SQLite, and again on real PostgreSQL and Cassandra servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from build_compiled import compiled_files, stale_modules
from tests.support.api import ApiClient
from tests.support.cassandra import CassandraServer, start_cassandra
from tests.support.chat import ClientFactory, client_factory
from tests.support.platform import Platform, start_platform
from tests.support.postgres import PostgresServer, start_postgres


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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cassandra() -> Iterator[CassandraServer]:
    """One Apache Cassandra node for the session (each test uses keyspaces of its own)."""
    server = start_cassandra()
    yield server
    server.stop()


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
