"""Each device's send rate is enforced at the edge, over MQTT and REST alike, per device."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.chat import WAIT_S, ClientFactory, client_factory, expect_event
from tests.support.platform import Platform, start_platform

BURST = 3
# A burst of three and no refill to speak of while the test runs.
LIMITS = {"HUBBUB_SENDS_PER_SECOND": "0.0001", "HUBBUB_SEND_BURST": str(BURST)}


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Platform]:
    platform = start_platform(tmp_path, extra_env=LIMITS)
    try:
        yield platform
    finally:
        platform.stop()


@pytest.fixture
def clients(limited: Platform) -> Iterator[ClientFactory]:
    with client_factory(limited.http_url) as make:
        yield make


def _acks_and_errors(events: queue.Queue[dict[str, Any]], acks: int, errors: int) -> list[dict[str, Any]]:
    """Events until ``acks`` acks and ``errors`` errors arrived (an error may come before the acks)."""
    seen: list[dict[str, Any]] = []
    while sum(e["kind"] == "ack" for e in seen) < acks or sum(e["kind"] == "error" for e in seen) < errors:
        try:
            event = events.get(timeout=WAIT_S)
        except queue.Empty:
            raise AssertionError(f"expected {acks} acks and {errors} errors, got {seen}") from None
        if event["kind"] in {"ack", "error"}:
            seen.append(event)
    return seen


def test_a_device_over_its_rate_gets_rate_limited_and_nothing_more_is_stored(clients: ClientFactory) -> None:
    alice, bob = clients(), clients()
    cid = alice.request("POST", "/v1/conversations", json={"type": "direct", "user_id": bob.user_id}).json()[
        "id"
    ]
    sent = [alice.send(cid, f"m{index}") for index in range(BURST + 1)]
    events = _acks_and_errors(alice.events, acks=BURST, errors=1)
    assert sorted(e["cmid"] for e in events if e["kind"] == "ack") == sorted(p.cmid for p in sent[:BURST])
    [error] = [e for e in events if e["kind"] == "error"]
    assert (error["code"], error["cmid"], error["conversation_id"]) == ("rate_limited", sent[-1].cmid, cid)
    assert [p.cmid for p in alice.outbox.unsettled()] == [sent[-1].cmid]  # kept, to be resent later

    over_rest = alice.request("POST", f"/v1/conversations/{cid}/messages", json={"cmid": "rest", "text": "x"})
    assert over_rest.status_code == 429
    assert over_rest.json()["error"]["code"] == "rate_limited"
    assert int(over_rest.headers["Retry-After"]) >= 1

    history = alice.request("GET", f"/v1/conversations/{cid}/messages").json()["messages"]
    assert [m["text"] for m in history] == [f"m{index}" for index in range(BURST)]
    # The limit is per device: bob's sends are untouched by alice's.
    bob.send(cid, "from bob")
    assert expect_event(bob, "ack")["seq"] == BURST + 1
