"""Push to offline users end to end: the real platform pushing to a real HTTP push gateway.

No native provider is configured, so every token goes to the webhook provider (the
embedded fallback) pointed at ``PushGateway``; the provider-level protocols (APNs, FCM,
Web Push) have their own tests in tests/notifier.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from client import HubbubClient
from tests.support.chat import ClientFactory, client_factory, expect_event
from tests.support.platform import Platform, start_platform
from tests.support.webhook import PushGateway

APNS_TOKEN = "a1" * 32


@pytest.fixture(scope="module")
def gateway() -> Iterator[PushGateway]:
    running = PushGateway()
    yield running
    running.close()


@pytest.fixture(scope="module")
def push_platform(tmp_path_factory: pytest.TempPathFactory, gateway: PushGateway) -> Iterator[Platform]:
    running = start_platform(
        tmp_path_factory.mktemp("push"),
        # The coalescing window is wide enough for a burst of 50 sends to fall within one window
        # even on a loaded machine (at 1 s a slow burst spilled into a third push).
        extra_env={"HUBBUB_PUSH_WEBHOOK_URL": gateway.url, "HUBBUB_PUSH_COALESCE_WINDOW_S": "5"},
    )
    yield running
    assert running.stop() == 0, running.process.log()


@pytest.fixture
def clients(push_platform: Platform) -> Iterator[ClientFactory]:
    with client_factory(push_platform.http_url) as make:
        yield make


def _register(client: HubbubClient, token: str = APNS_TOKEN) -> None:
    response = client.request(
        "PUT", f"/v1/devices/{client.device_id}/push", json={"provider": "apns", "token": token}
    )
    assert response.status_code == 200, response.text


def _group(creator: HubbubClient, *members: HubbubClient) -> str:
    body = {"type": "group", "title": "Climbing", "member_ids": [member.user_id for member in members]}
    conversation_id: str = creator.request("POST", "/v1/conversations", json=body).json()["id"]
    return conversation_id


def test_offline_members_are_pushed_online_ones_and_the_sender_are_not(
    clients: ClientFactory, gateway: PushGateway
) -> None:
    alice, bob, carol = clients(), clients(connect=False), clients()
    for member in (alice, bob, carol):
        _register(member)
    cid = _group(alice, bob, carol)
    alice.send(cid, "rope at 6?")
    push = gateway.next_push(bob.device_id)
    assert push["notification"]["title"].startswith(_name(alice))
    assert "Climbing" in push["notification"]["title"]
    assert push["notification"]["body"] == "rope at 6?"
    assert push["notification"]["thread_id"] == cid
    assert push["notification"]["badge"] == 1
    assert push["notification"]["data"]["conversation_id"] == cid
    carol.disconnect()
    alice.send(cid, "bring the quickdraws")
    later = gateway.next_push(carol.device_id)
    assert later["notification"]["body"] == "bring the quickdraws"  # carol had no push while online


def _name(client: HubbubClient) -> str:
    name: str = client.request("GET", "/v1/users/me").json()["display_name"]
    return name


def test_a_muted_conversation_is_not_pushed(clients: ClientFactory, gateway: PushGateway) -> None:
    alice, bob = clients(), clients(connect=False)
    _register(bob)
    cid = alice.request("POST", "/v1/conversations", json={"type": "direct", "user_id": bob.user_id}).json()[
        "id"
    ]
    assert bob.request("PUT", f"/v1/conversations/{cid}/mute", json={"muted": True}).json() == {"muted": True}
    alice.send(cid, "you will not hear this")
    # A marker in another conversation: pushes are planned in commit order, one at a time,
    # so by the time the marker is pushed the muted message has been passed over.
    other = alice.request(
        "POST", "/v1/conversations", json={"type": "group", "title": "m", "member_ids": [bob.user_id]}
    )
    alice.send(other.json()["id"], "but this")
    assert gateway.next_push(bob.device_id)["notification"]["body"] == "but this"


def test_a_burst_coalesces_into_one_or_two_pushes(clients: ClientFactory, gateway: PushGateway) -> None:
    alice, bob = clients(), clients(connect=False)
    _register(bob)
    cid = alice.request("POST", "/v1/conversations", json={"type": "direct", "user_id": bob.user_id}).json()[
        "id"
    ]
    for index in range(50):
        alice.send(cid, f"burst {index}")
    assert alice.outbox.emptied.wait(30)
    first = gateway.next_push(bob.device_id)
    pushes = [first]
    while "burst 49" not in pushes[-1]["notification"]["body"]:
        pushes.append(gateway.next_push(bob.device_id))
    assert len(pushes) <= 2
    assert pushes[-1]["notification"]["badge"] == 50
    other = alice.request(
        "POST", "/v1/conversations", json={"type": "group", "title": "x", "member_ids": [bob.user_id]}
    )
    alice.send(other.json()["id"], "after the burst")
    assert gateway.next_push(bob.device_id)["notification"]["body"] == "after the burst"


def test_a_dead_token_is_removed_and_the_device_told_to_register_again(
    clients: ClientFactory, gateway: PushGateway
) -> None:
    alice, bob = clients(), clients(connect=False)
    _register(bob, "b2" * 32)
    gateway.gone.add(bob.device_id)
    cid = alice.request("POST", "/v1/conversations", json={"type": "direct", "user_id": bob.user_id}).json()[
        "id"
    ]
    alice.send(cid, "anyone there?")
    gateway.next_push(bob.device_id)
    # The 410 is acted on right after the gateway answers: watch the registration change.
    deadline = time.monotonic() + 20
    state = bob.request("GET", f"/v1/devices/{bob.device_id}/push").json()
    while state["registered"] and time.monotonic() < deadline:
        state = bob.request("GET", f"/v1/devices/{bob.device_id}/push").json()
    assert state == {"provider": "apns", "registered": False, "register_again": True}
    bob.connect()  # and the device hears it when it comes back
    assert expect_event(bob, "push")["action"] == "register_again"


def test_registration_is_validated_and_for_ones_own_devices(clients: ClientFactory) -> None:
    alice, bob = clients(connect=False), clients(connect=False)
    others = alice.request(
        "PUT", f"/v1/devices/{bob.device_id}/push", json={"provider": "apns", "token": APNS_TOKEN}
    )
    assert others.status_code == 404
    insecure = {
        "provider": "webpush",
        "subscription": {"endpoint": "http://push.example/x", "keys": {"p256dh": "k" * 40, "auth": "a" * 16}},
    }
    assert alice.request("PUT", f"/v1/devices/{alice.device_id}/push", json=insecure).status_code == 422
    no_token = alice.request("PUT", f"/v1/devices/{alice.device_id}/push", json={"provider": "fcm"})
    assert no_token.status_code == 422
    assert alice.request("DELETE", f"/v1/devices/{alice.device_id}/push").status_code == 204
    key = alice.request("GET", "/v1/push/vapid-public-key").json()["public_key"]
    assert len(key) == 87  # an uncompressed P-256 point, base64url without padding


def test_metrics_count_pushes_per_provider(clients: ClientFactory, gateway: PushGateway) -> None:
    alice, bob = clients(), clients(connect=False)
    _register(bob, "c3" * 32)
    cid = alice.request("POST", "/v1/conversations", json={"type": "direct", "user_id": bob.user_id}).json()[
        "id"
    ]
    alice.send(cid, "count me")
    gateway.next_push(bob.device_id)
    text = alice.http.get("/metrics").text
    assert 'hubbub_push_sent_total{provider="webhook"}' in text
