"""Many devices syncing at once: more requests in flight than the account store's pool holds.

Sync reads the account store (memberships, cursors) and history in one request. When history
shared the account store's connection pool, each request held one connection and waited for a
second: ~15 syncs at once on PostgreSQL (a pool of 10 + 20) starved it until the pool timed out.
That is what every device of a failed broker node does on reconnecting elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.support.api import ApiClient
from tests.support.platform import Platform

_IN_FLIGHT = 60  # twice the pool's 30 connections


@pytest.fixture
def pg_api(pg_platform: Platform) -> Iterator[ApiClient]:
    client = ApiClient(pg_platform.http_url)
    yield client
    client.close()


async def _burst(base_url: str, headers: dict[str, str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=_IN_FLIGHT)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60) as http:
        return await asyncio.gather(*(http.get("/v1/sync") for _ in range(_IN_FLIGHT)))


def test_a_burst_of_syncs_larger_than_the_pool_is_answered(pg_api: ApiClient, pg_platform: Platform) -> None:
    me = pg_api.new_user("syncer")
    other = pg_api.sign_up()["id"]
    group = pg_api.http.post(
        "/v1/conversations", json={"type": "group", "title": "s", "member_ids": [other]}, headers=me.headers
    )
    assert group.status_code == 201, group.text
    cid = group.json()["id"]
    sent = pg_api.http.post(
        f"/v1/conversations/{cid}/messages", json={"cmid": "s-1", "text": "catch me up"}, headers=me.headers
    )
    assert sent.status_code in {200, 201}, sent.text

    responses = asyncio.run(_burst(pg_platform.http_url, me.headers))

    assert [response.status_code for response in responses] == [200] * _IN_FLIGHT
    for response in responses:
        (conversation,) = response.json()["conversations"]
        assert conversation["conversation_id"] == cid
        assert [message["text"] for message in conversation["messages"]] == ["catch me up"]
