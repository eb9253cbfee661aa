"""A device signed out on the cluster's API is closed on its node and refused at CONNECT on every node.

Each broker node asks the account store whether a device is still signed in at its CONNECT (one
autocommit ``SELECT`` per batch of devices), and remembers the devices it found signed in until
``hubbub.device.ended`` says otherwise. So after a logout through ``hubbub api`` (another
process), the device's token, still well within its lifetime, is refused both by the node that
held it (it forgot the device on the event) and by a node that never saw it (the store no longer
holds the device: the read sees the committed removal, with no transaction of its own to hold an
older view).
"""

from __future__ import annotations

import pytest

from launcher.devcluster import HubbubProcess
from tests.support.api import ApiClient, Login
from tests.support.cluster import HubbubCluster
from tests.support.mqtt import WAIT_S, Device

pytestmark = pytest.mark.timeout(300)

NOT_AUTHORIZED = 135  # CONNACK 5, as paho reports it (its MQTT 5 reason code "Not authorized")


def _device(broker: HubbubProcess, login: Login) -> Device:
    host, port = broker.ready.mqtt
    return Device(
        host=host, port=port, client_id=login.device_id, username=login.user_id, password=login.access_token
    )


def test_a_signed_out_device_is_closed_and_refused_by_every_node(cluster: HubbubCluster) -> None:
    held_it, never_saw_it = cluster.brokers
    api = ApiClient(cluster.api_url)
    phone = api.new_user("signout")
    laptop = api.login(phone.username)
    phone_device, laptop_device = _device(held_it, phone), _device(never_saw_it, laptop)
    try:
        assert phone_device.connect() == 0
        assert laptop_device.connect() == 0  # signed in: admitted by a node asking the store
        assert api.http.post("/v1/auth/logout", headers=phone.headers).status_code == 204
        assert phone_device.disconnected.wait(WAIT_S)  # hubbub.device.ended reached its node
        for broker in (held_it, never_saw_it):
            again = _device(broker, phone)
            try:
                assert again.connect() == NOT_AUTHORIZED, broker.name
            finally:
                again.close()
        assert not laptop_device.disconnected.is_set()
    finally:
        phone_device.close()
        laptop_device.close()
        api.close()
