"""Presence with real clients: devices aggregated per user, grace period, keepalive, ACL."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from client import HubbubClient
from tests.support.api import ApiClient, Login
from tests.support.chat import ClientFactory, expect_event, no_event_before
from tests.support.mqtt import Device, Received
from tests.support.platform import Platform, start_platform
from tests.support.wire import connect_packet

GRACE_S = 2.0  # HUBBUB_PRESENCE_GRACE_S of the test platform
REFUSED = 0x80


@pytest.fixture
def watchers() -> Iterator[list[Device]]:
    made: list[Device] = []
    yield made
    for device in made:
        device.close()


def _friends(a: HubbubClient, b: HubbubClient) -> None:
    a.request("POST", "/v1/friends/requests", json={"user_id": b.user_id})
    assert b.request("POST", f"/v1/friends/requests/{a.user_id}/accept").status_code == 200


def _watch(
    platform: Platform, api: ApiClient, watchers: list[Device], subject: HubbubClient
) -> tuple[Device, Login]:
    """A friend of ``subject`` subscribed to its presence."""
    login = api.new_user("watcher")
    api.http.post("/v1/friends/requests", json={"user_id": subject.user_id}, headers=login.headers)
    subject.request("POST", f"/v1/friends/requests/{login.user_id}/accept").raise_for_status()
    device = Device.for_login(platform, login)
    watchers.append(device)
    assert device.connect() == 0
    assert device.subscribe(f"presence/{subject.user_id}", qos=1) == [1]
    return device, login


def _status(message: Received) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(message.payload)
    return body


def test_a_new_subscriber_gets_the_retained_state_at_once(
    platform: Platform, api: ApiClient, clients: ClientFactory, watchers: list[Device]
) -> None:
    subject = clients()
    watcher, _ = _watch(platform, api, watchers, subject)
    first = watcher.next_message()
    assert first.retain
    assert _status(first)["status"] == "online"
    assert _status(first)["user_id"] == subject.user_id


def test_online_while_any_device_is_connected_offline_once_none_is(
    platform: Platform, api: ApiClient, clients: ClientFactory, watchers: list[Device]
) -> None:
    # The grace period's timing is unit-tested with a stepped clock (tests/messaging/test_presence.py).
    phone = clients()
    laptop = clients(_username(phone))
    watcher, _ = _watch(platform, api, watchers, phone)
    assert _status(watcher.next_message())["status"] == "online"
    phone.disconnect()  # the laptop is still connected: nothing changes
    laptop.disconnect()
    offline = watcher.next_message(timeout=GRACE_S + 15)
    assert _status(offline)["status"] == "offline"
    assert _status(offline)["last_active_at"] is not None
    laptop.connect()
    assert _status(watcher.next_message(timeout=GRACE_S + 15))["status"] == "online"


def _username(client: HubbubClient) -> str:
    username: str = client.request("GET", "/v1/users/me").json()["username"]
    return username


def test_a_reconnect_within_the_grace_period_publishes_nothing(
    platform: Platform, api: ApiClient, clients: ClientFactory, watchers: list[Device]
) -> None:
    subject = clients()
    watcher, _ = _watch(platform, api, watchers, subject)
    assert _status(watcher.next_message())["status"] == "online"
    subject.disconnect()
    subject.connect()  # back at once, like a train leaving a tunnel
    subject.disconnect()  # now really gone
    # The next change the watcher sees is the final offline: no offline/online flap before it.
    assert _status(watcher.next_message(timeout=GRACE_S + 15))["status"] == "offline"


def test_a_silent_socket_is_noticed_through_keepalive(
    platform: Platform, api: ApiClient, clients: ClientFactory, watchers: list[Device]
) -> None:
    subject = api.new_user("silent")
    friend = clients()
    api.http.post("/v1/friends/requests", json={"user_id": friend.user_id}, headers=subject.headers)
    friend.request("POST", f"/v1/friends/requests/{subject.user_id}/accept").raise_for_status()
    with socket.create_connection((platform.mqtt_host, platform.mqtt_port), timeout=30) as sock:
        sock.sendall(connect_packet(subject.device_id, subject.user_id, subject.access_token, keepalive=1))
        assert sock.recv(4) == b"\x20\x02\x00\x00"
        watcher = Device.for_login(platform, api.login(friend_name := _username(friend)))
        del friend_name
        watchers.append(watcher)
        assert watcher.connect() == 0
        assert watcher.subscribe(f"presence/{subject.user_id}") == [1]
        assert _status(watcher.next_message())["status"] == "online"
        # Then the socket goes silent: no PINGREQ, no DISCONNECT. The broker closes it
        # after 1.5 x keepalive and the user goes offline after the grace period.
        assert sock.recv(16) == b""
    assert _status(watcher.next_message(timeout=GRACE_S + 15))["status"] == "offline"


def test_a_socket_that_pings_within_its_keepalive_stays_connected(platform: Platform, api: ApiClient) -> None:
    subject = api.new_user("pinging")
    with socket.create_connection((platform.mqtt_host, platform.mqtt_port), timeout=30) as sock:
        sock.sendall(connect_packet(subject.device_id, subject.user_id, subject.access_token, keepalive=1))
        assert sock.recv(4) == b"\x20\x02\x00\x00"
        # Four keepalive periods, twice the 2 s deadline: in each the broker sends nothing and
        # keeps the socket open (the read times out), then answers the PINGREQ.
        for _ in range(4):
            sock.settimeout(0.9)
            with pytest.raises(TimeoutError):
                sock.recv(16)
            sock.settimeout(30)
            sock.sendall(b"\xc0\x00")
            assert sock.recv(2) == b"\xd0\x00"


def test_presence_is_for_self_friends_and_co_members_only(
    platform: Platform, api: ApiClient, clients: ClientFactory, watchers: list[Device]
) -> None:
    subject, co_member = clients(), clients(connect=False)
    subject.request("POST", "/v1/conversations", json={"type": "direct", "user_id": co_member.user_id})
    stranger = api.new_user("stranger")
    device = Device.for_login(platform, stranger)
    watchers.append(device)
    assert device.connect() == 0
    assert device.subscribe(f"presence/{subject.user_id}") == [REFUSED]
    assert device.subscribe(f"presence/{stranger.user_id}") == [1]
    member_device = Device.for_login(platform, api.login(_username(co_member)))
    watchers.append(member_device)
    assert member_device.connect() == 0
    assert member_device.subscribe(f"presence/{subject.user_id}") == [1]
    lookup = api.http.get(
        "/v1/presence", params={"user_ids": f"{subject.user_id},{stranger.user_id}"}, headers=stranger.headers
    )
    assert [row["user_id"] for row in lookup.json()["presence"]] == [stranger.user_id]
    member_lookup = co_member.request("GET", "/v1/presence", params={"user_ids": subject.user_id}).json()
    assert [(row["user_id"], row["status"]) for row in member_lookup["presence"]] == [
        (subject.user_id, "online")
    ]
    too_many = co_member.request(
        "GET", "/v1/presence", params={"user_ids": ",".join(str(i) for i in range(1, 102))}
    )
    assert too_many.status_code == 422


def test_typing_reaches_the_other_members_and_only_them(clients: ClientFactory) -> None:
    alice, bob, mallory = clients(), clients(), clients()
    cid = alice.request("POST", "/v1/conversations", json={"type": "direct", "user_id": bob.user_id}).json()[
        "id"
    ]
    assert mallory._mqtt is not None
    mallory._mqtt.publish(f"conv/{cid}/typing", b"{}", qos=1).wait_for_publish(10)
    assert alice._mqtt is not None
    alice._mqtt.publish(f"conv/{cid}/typing", b"{}", qos=1).wait_for_publish(10)
    typing = expect_event(bob, "typing")
    assert (typing["conversation_id"], typing["user_id"]) == (cid, alice.user_id)
    alice.send(cid, "marker")
    before_ack = no_event_before(alice, lambda event: event.get("kind") == "ack")
    assert all(event.get("kind") != "typing" for event in before_ack)
    assert alice.request("GET", f"/v1/conversations/{cid}/messages").json()["messages"][0]["text"] == "marker"


def test_last_activity_survives_a_restart_and_nobody_is_shown_online_after_it(tmp_path: Path) -> None:
    platform = start_platform(tmp_path, extra_env={"HUBBUB_PRESENCE_GRACE_S": "0"})
    api = ApiClient(platform.http_url)
    try:
        subject, watcher_login = api.new_user(), api.new_user()
        api.http.post(
            "/v1/friends/requests", json={"user_id": subject.user_id}, headers=watcher_login.headers
        )
        api.http.post(f"/v1/friends/requests/{watcher_login.user_id}/accept", headers=subject.headers)
        device = Device.for_login(platform, subject)
        assert device.connect() == 0
        watcher = Device.for_login(platform, watcher_login)
        assert watcher.connect() == 0
        assert watcher.subscribe(f"presence/{subject.user_id}") == [1]
        assert _status(watcher.next_message())["status"] == "online"
        watcher.close()
        platform.process.stop(9)  # the subject is still "connected" when the platform dies
        http_port = platform.http_url.rsplit(":", 1)[1]
        again = start_platform(
            tmp_path,
            extra_env={"HUBBUB_MQTT_PORT": str(platform.mqtt_port), "HUBBUB_HTTP_PORT": http_port},
        )
        try:
            fresh = api.login(watcher_login.username)
            watcher = Device.for_login(again, fresh)
            assert watcher.connect() == 0
            assert watcher.subscribe(f"presence/{subject.user_id}") == [1]
            state = _status(watcher.next_message())
            assert state["status"] == "offline"
            assert state["last_active_at"] is not None
            watcher.close()
        finally:
            again.stop()
        device.close()
    finally:
        api.close()
