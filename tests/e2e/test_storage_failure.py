"""A store that refuses writes: senders hear ``unavailable`` at once, resend, and nothing is lost.

The failure is real, on each backend. SQLite: another process holds the write lock on the
platform's database file (``BEGIN IMMEDIATE``) past the busy timeout, so the writer process's
commits and the API's writes fail with ``database is locked`` as they do under a disk that
refuses writes. PostgreSQL: the server is told to make every transaction of the platform's
database read-only and to end its open connections, so every write is refused by the server.
Then the refusal ends, and the platform must recover by itself.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy.engine import make_url

from hubbub import topics
from tests.support.api import PASSWORD, ApiClient
from tests.support.mqtt import WAIT_S, Device
from tests.support.platform import Platform, start_platform
from tests.support.postgres import PostgresServer

# The writer waits out SQLite's busy timeout (5 s by default) before a commit fails.
_FAILURE_WAIT_S = WAIT_S + 10
# A SQLite write waits this long for the lock before it fails (HUBBUB_SQLITE_BUSY_TIMEOUT_S): the
# refused writes fail sooner than at the default's 5 s each, and the same.
_SQLITE_BUSY_TIMEOUT_S = "1"


Refusal = Callable[[], AbstractContextManager[None]]


@contextmanager
def _sqlite_locked(database: Path) -> Iterator[None]:
    lock = sqlite3.connect(database, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # the write lock, held past every writer's busy timeout
        yield
    finally:
        lock.execute("ROLLBACK")
        lock.close()


def _psql(server: PostgresServer, sql: str) -> None:
    user = make_url(server.url).username or ""
    command = [str(server.bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(server.port), "-U", user]
    subprocess.run(
        [*command, "-d", "hubbub", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True, capture_output=True
    )


@contextmanager
def _postgres_read_only(server: PostgresServer, database: str) -> Iterator[None]:
    # The setting applies to new sessions: ending the open ones makes the pool reconnect.
    end_sessions = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s'" % database  # noqa: S608, UP031
    _psql(server, f"ALTER DATABASE {database} SET default_transaction_read_only = on")
    _psql(server, end_sessions)
    try:
        yield
    finally:
        _psql(server, f"ALTER DATABASE {database} RESET default_transaction_read_only")
        _psql(server, end_sessions)


@pytest.fixture(params=["sqlite", "postgres"])
def refusing(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Platform, Refusal]]:
    """A platform of its own (the shared ones must never refuse writes), and how to make it."""
    if request.param == "sqlite":
        running = start_platform(tmp_path, extra_env={"HUBBUB_SQLITE_BUSY_TIMEOUT_S": _SQLITE_BUSY_TIMEOUT_S})
        refusal: Refusal = lambda: _sqlite_locked(running.data_dir / "hubbub.db")  # noqa: E731
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        database = f"refusing_{os.getpid()}"
        url = server.create_database(database)
        running = start_platform(tmp_path, extra_env={"HUBBUB_DATABASE_URL": url})
        refusal = lambda: _postgres_read_only(server, database)  # noqa: E731
    yield running, refusal
    assert running.stop() == 0, running.process.log()


def _events(device: Device, count: int, timeout: float = WAIT_S) -> list[dict[str, Any]]:
    """The next ``count`` acks and errors of the MQTT sends (``c-...``).

    The REST sends' (``r-...``) come too, as they do to any sending device, and are skipped.
    """
    events: list[dict[str, Any]] = []
    while len(events) < count:
        event = orjson.loads(device.next_message(timeout).payload)
        if event["kind"] in {"ack", "error"} and event["cmid"].startswith("c-"):
            events.append(event)
    return events


def _send(device: Device, conversation_id: str, cmid: str) -> None:
    payload = orjson.dumps({"cmid": cmid, "text": f"text of {cmid}"})
    device.publish(topics.conversation_send(int(conversation_id)), payload)


def _client_port(response: httpx.Response) -> int:
    port: int = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    return port


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "unavailable"
    assert int(response.headers["Retry-After"]) > 0


def test_a_store_refusing_writes_answers_unavailable_and_a_resend_after_recovery_is_stored_once(
    refusing: tuple[Platform, Refusal],
) -> None:
    own_platform, refusal = refusing
    api = ApiClient(own_platform.http_url)
    alice, bob = api.new_user("alice"), api.new_user("bob")
    created = api.http.post(
        "/v1/conversations", headers=alice.headers, json={"type": "direct", "user_id": bob.user_id}
    )
    assert created.status_code == 201, created.text
    cid: str = created.json()["id"]
    device = Device.for_login(own_platform, alice)
    assert device.connect() == 0
    assert device.subscribe(topics.inbox(int(alice.user_id))) == [1]
    http = httpx.Client(base_url=own_platform.http_url, timeout=60.0, limits=httpx.Limits(max_connections=1))
    with refusal():
        cmids = ["c-1", "c-2", "c-3"]
        for cmid in cmids:
            _send(device, cid, cmid)
        errors = _events(device, len(cmids), timeout=_FAILURE_WAIT_S * 2)
        assert {event["cmid"] for event in errors} == set(cmids)
        for event in errors:
            assert (event["kind"], event["code"], event["conversation_id"]) == ("error", "unavailable", cid)
            assert event["retry_after_ms"] > 0

        refused = http.post(
            f"/v1/conversations/{cid}/messages",
            headers=alice.headers,
            json={"cmid": "r-1", "text": "by REST"},
        )
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "unavailable"
        assert int(refused.headers["Retry-After"]) > 0
        sign_up = http.post(
            "/v1/users", json={"username": api.unique_username("carol"), "password": PASSWORD}
        )
        assert sign_up.status_code == 503, sign_up.text
        assert sign_up.json()["error"]["code"] == "unavailable"
        assert int(sign_up.headers["Retry-After"]) > 0
        port = _client_port(sign_up)

    try:
        # The same connection goes on, and the same sends, resent, are stored once each.
        signed_up = http.post(
            "/v1/users", json={"username": api.unique_username("carol"), "password": PASSWORD}
        )
        assert signed_up.status_code == 201, signed_up.text
        assert _client_port(signed_up) == port
        for cmid in cmids:
            _send(device, cid, cmid)
        acks = _events(device, len(cmids))
        assert [(event["kind"], event["cmid"]) for event in acks] == [("ack", cmid) for cmid in cmids]
        stored = http.post(
            f"/v1/conversations/{cid}/messages",
            headers=alice.headers,
            json={"cmid": "r-1", "text": "by REST"},
        )
        assert stored.status_code == 201, stored.text
        _send(device, cid, "c-1")  # once more: the original ack, nothing stored twice
        assert _events(device, 1)[0] == acks[0]
    finally:
        device.close()
        http.close()

    history = api.http.get(f"/v1/conversations/{cid}/messages", headers=bob.headers).json()["messages"]
    assert [(m["cmid"], m["seq"]) for m in history] == [("c-1", 1), ("c-2", 2), ("c-3", 3), ("r-1", 4)]
    api.close()

    _assert_failures_summed_up(own_platform.process.log())


def _assert_failures_summed_up(log: str) -> None:
    """The first failure once, the rest summed up in one line, the recovery once.

    Not a traceback per batch, and none at INFO: a database error's repeats its statement's values.
    """
    assert log.count("persister.persister: commit failed: ") == 1, log
    assert len(re.findall(r"persister\.persister: commit failed \d+ times in the last", log)) <= 1, log
    assert log.count("persister.persister: commit works again after") == 1, log
    assert "Traceback" not in log, log
