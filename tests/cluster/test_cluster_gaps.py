"""What else a broker node's NATS gap loses: membership changes and ended devices.

As in ``test_cluster_resync``, the node under test is a third broker whose NATS link goes through
a relay (``tests.cluster.relay``) that blacks out and then cuts. During the blackout the API
publishes ``hubbub.membership.changed`` (a member removed from a group) or ``hubbub.device.ended``
(a device logged out) into the void. After the reconnect the node must act as if it had heard:
the removed member may no longer send (the node's membership cache was forgotten), and the
signed-out device is disconnected and its token refused (the node checked its devices' sign-ins
against the store again, ``cluster/session_recheck.py``).
"""

from __future__ import annotations

import re

import pytest

from launcher.devcluster import HubbubProcess
from tests.cluster.relay import Relay
from tests.support.api import ApiClient, Login
from tests.support.chat import expect_event
from tests.support.cluster import OUTCOME_S, ClusterClients, HubbubCluster
from tests.support.mqtt import WAIT_S, Device

pytestmark = pytest.mark.timeout(300)

NOT_AUTHORIZED = 135  # CONNACK 5, as paho reports it (its MQTT 5 reason code "Not authorized")


def test_a_member_removed_during_the_gap_may_not_send_after_it(
    cluster: HubbubCluster, users: ClusterClients, relay: Relay, relayed_node: HubbubProcess
) -> None:
    alice = users(broker=cluster.brokers[1])
    bob = users(broker=relayed_node)
    created = alice.request(
        "POST", "/v1/conversations", json={"type": "group", "title": "gap", "member_ids": [bob.user_id]}
    )
    assert created.status_code == 201, created.text
    group = created.json()["id"]
    bob.send(group, "before the gap")  # the node's ingest now caches the group's members
    assert bob.outbox.emptied.wait(OUTCOME_S), "bob's message before the gap was never acknowledged"

    relay.black_out()
    removed = alice.request("DELETE", f"/v1/conversations/{group}/members/{bob.user_id}")
    assert removed.status_code == 204, removed.text
    assert relay.dark_connections(), "the node left the blackout by itself before the removal"
    relay.cut()

    expect_event(bob, "resync")  # the node reconnected and settled
    pending = bob.send(group, "after the removal")
    error = expect_event(bob, "error", lambda event: event["cmid"] == pending.cmid)
    assert error["code"] == "not_member"


def _device(broker: HubbubProcess, login: Login) -> Device:
    host, port = broker.ready.mqtt
    return Device(
        host=host, port=port, client_id=login.device_id, username=login.user_id, password=login.access_token
    )


def test_a_device_signed_out_during_the_gap_is_closed_and_refused_after_it(
    cluster: HubbubCluster, relay: Relay, relayed_node: HubbubProcess
) -> None:
    api = ApiClient(cluster.api_url)
    phone = api.new_user("gaps")
    laptop = api.login(phone.username)
    phone_device, laptop_device = _device(relayed_node, phone), _device(relayed_node, laptop)
    try:
        assert phone_device.connect() == 0
        assert laptop_device.connect() == 0
        relay.black_out()
        assert api.http.post("/v1/auth/logout", headers=phone.headers).status_code == 204
        assert relay.dark_connections(), "the node left the blackout by itself before the logout"
        assert not phone_device.disconnected.is_set()
        relay.cut()

        assert phone_device.disconnected.wait(WAIT_S), "the device signed out in the gap is still connected"
        again = _device(relayed_node, phone)
        try:
            assert again.connect() == NOT_AUTHORIZED
        finally:
            again.close()
        assert not laptop_device.disconnected.is_set()  # checked in the same slice, still signed in
        metrics = cluster.metrics(relayed_node)
        assert re.search(
            rf'^hubbub_session_recheck_ended_total\{{node="{relayed_node.name}"\}} 1\.0$',
            metrics,
            re.MULTILINE,
        )
    finally:
        phone_device.close()
        laptop_device.close()
        api.close()
