"""The steps of docs/clients.md that no other test walks through, done as an app does them.

Each test drives the project's Python client (paho + httpx) the way a mobile app drives a stock
MQTT library: log in, connect, reconnect, catch up, refresh.
"""

from __future__ import annotations

import time

from client import HubbubClient
from hubbub.tokens import TokenCodec
from tests.support.api import ApiClient
from tests.support.chat import WAIT_S, ClientFactory, direct_conversation, expect_event
from tests.support.platform import Platform


def _texts(client: HubbubClient, conversation_id: str) -> list[str]:
    return [message["text"] for message in client.timelines[conversation_id].ordered()]


def test_a_reconnect_catches_up_what_was_missed_and_moves_the_cursor(clients: ClientFactory) -> None:
    alice, bob = clients(), clients()
    cid = direct_conversation(alice, bob)
    alice.send(cid, "before")
    expect_event(bob, "message")
    bob.disconnect()
    for index in range(3):
        alice.send(cid, f"while away {index}")
    assert alice.outbox.emptied.wait(WAIT_S)
    bob.connect()
    assert bob.settled(WAIT_S)
    assert _texts(bob, cid) == ["before", "while away 0", "while away 1", "while away 2"]
    assert bob.timelines[cid].gap is None
    assert bob.request("GET", "/v1/sync").json()["conversations"] == []  # the cursor moved to seq 4


def test_a_seq_gap_is_filled_from_history(clients: ClientFactory, api: ApiClient) -> None:
    username = ApiClient.unique_username("gap")
    api.sign_up(username)
    alice, first = clients(), clients(username)
    cid = direct_conversation(alice, first)
    for text in ("one", "two"):
        alice.send(cid, text)
        assert expect_event(first, "message")["text"] == text
    first.catch_up()  # the server-side cursor of this device is at seq 2
    first.close()
    # The same device, its local store lost: the catch-up brings nothing (the cursor says it
    # holds seq 2), so the next live message (seq 3) arrives with 1 and 2 missing.
    again = clients(username, device_id=first.device_id)
    assert again.settled(WAIT_S)
    assert again.timelines.get(cid) is None
    alice.send(cid, "three")
    assert expect_event(again, "message")["seq"] == 3
    assert again.settled(WAIT_S)
    assert _texts(again, cid) == ["one", "two", "three"]
    assert again.timelines[cid].gap is None


def test_an_expired_access_token_is_refreshed_for_mqtt_and_rest(
    clients: ClientFactory, platform: Platform
) -> None:
    bob = clients(connect=False)
    secret = (platform.data_dir / "secret.key").read_text().strip()
    an_hour_ago = TokenCodec(secret, access_ttl_s=60, clock_s=lambda: time.time() - 3600)
    expired = an_hour_ago.issue_access(int(bob.user_id), bob.device_id)
    bob._use_tokens({**bob._tokens, "access_token": expired})
    assert bob.request("GET", "/v1/users/me").status_code == 200  # 401, refresh, retried
    assert bob._tokens["access_token"] != expired
    bob._use_tokens({**bob._tokens, "access_token": expired})
    bob.connect(timeout=WAIT_S)  # CONNACK 5, refresh, reconnect with the new token
    assert bob._tokens["access_token"] != expired
    assert bob.settled(WAIT_S)
