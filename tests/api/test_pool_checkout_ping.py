"""Pooled PostgreSQL connections whose sessions ended are replaced on checkout, not handed to a request.

The pools ping each connection as they hand it out (``persister.sql_database``: one round trip,
not asyncpg's ``BEGIN; ;ROLLBACK``); a sync's two reads run on asyncpg pools of their own, which
replace a connection seen closed on checkout and read again on a new one if theirs died
mid-statement (``StatementReads``, tests/api/test_statement_reads.py). A server restart or
``pg_terminate_backend`` ends every pooled session at once; the requests that come next must
still be answered, every one, as the syncs of a failed node's devices would be.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import make_url

from tests.support.api import ApiClient
from tests.support.platform import Platform, start_platform
from tests.support.postgres import PostgresServer

_IN_FLIGHT = 12  # more than one connection of each pool (accounts, history) in use at once


@pytest.fixture
def own_database(postgres: PostgresServer, tmp_path: Path) -> Iterator[tuple[Platform, PostgresServer, str]]:
    """A platform on a database of its own: ending its sessions disturbs no other test."""
    database = f"pinged_{os.getpid()}"
    running = start_platform(tmp_path, extra_env={"HUBBUB_DATABASE_URL": postgres.create_database(database)})
    yield running, postgres, database
    assert running.stop() == 0, running.process.log()


def _end_sessions(server: PostgresServer, database: str) -> int:
    """``pg_terminate_backend`` of every session on ``database``, each waited for (PG 14+); how many."""
    user = make_url(server.url).username or ""
    sql = (
        "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "  # noqa: S608 - our own name
        f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    )
    psql = [
        str(server.bin_dir / "psql"),
        "-h",
        "127.0.0.1",
        "-p",
        str(server.port),
        "-U",
        user,
        "-d",
        database,
    ]
    done = subprocess.run([*psql, "-At", "-c", sql], check=True, capture_output=True, text=True)
    return int(done.stdout.strip())


async def _syncs(base_url: str, headers: dict[str, str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=_IN_FLIGHT)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60) as http:
        return await asyncio.gather(*(http.get("/v1/sync") for _ in range(_IN_FLIGHT)))


def test_syncs_after_every_session_ended_are_all_answered(
    own_database: tuple[Platform, PostgresServer, str],
) -> None:
    platform, server, database = own_database
    api = ApiClient(platform.http_url)
    try:
        me = api.new_user("pinged")
        other = api.sign_up()["id"]
        group = api.http.post(
            "/v1/conversations",
            json={"type": "group", "title": "p", "member_ids": [other]},
            headers=me.headers,
        )
        assert group.status_code == 201, group.text
        cid = group.json()["id"]
        sent = api.http.post(
            f"/v1/conversations/{cid}/messages",
            json={"cmid": "p-1", "text": "still here"},
            headers=me.headers,
        )
        assert sent.status_code in {200, 201}, sent.text
        before = asyncio.run(_syncs(platform.http_url, me.headers))  # the pools now hold connections
        assert [response.status_code for response in before] == [200] * _IN_FLIGHT

        assert _end_sessions(server, database) > 0

        after = asyncio.run(_syncs(platform.http_url, me.headers))
        assert [response.status_code for response in after] == [200] * _IN_FLIGHT, after[0].text
        for response in after:
            (conversation,) = response.json()["conversations"]
            assert [message["text"] for message in conversation["messages"]] == ["still here"]
    finally:
        api.close()
