"""The client's answer to ``resync``: a catch-up, one per burst of them, never one per event.

The catch-up itself (``/v1/sync``) is the e2e test's (``tests/cluster/test_cluster_resync.py``);
here it is replaced by one that counts and holds, to see how the events queue it.
"""

from __future__ import annotations

import threading

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from client import HubbubClient
from hubbub import topics
from hubbub.events import resync_event

WAIT_S = 20.0


def _resync() -> paho.MQTTMessage:
    message = paho.MQTTMessage(topic=topics.inbox(1).encode())
    message.payload = resync_event()
    return message


def test_resyncs_during_a_catch_up_queue_one_more_not_one_each(monkeypatch: pytest.MonkeyPatch) -> None:
    client = HubbubClient("http://127.0.0.1:9")
    network = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    began = threading.Semaphore(0)
    release = threading.Event()
    runs: list[int] = []

    def catch_up() -> None:
        runs.append(len(runs))
        began.release()
        release.wait(WAIT_S)

    monkeypatch.setattr(client, "catch_up", catch_up)
    try:
        client._received(network, None, _resync())
        assert began.acquire(timeout=WAIT_S)  # the first catch-up has begun, and waits
        for _ in range(5):  # it may have read before these: one more catch-up after it is owed
            client._received(network, None, _resync())
        release.set()
        assert client.settled(WAIT_S)
        assert runs == [0, 1]
        kinds = [client.events.get_nowait()["kind"] for _ in range(6)]
        assert kinds == ["resync"] * 6
    finally:
        release.set()
        client.close()
