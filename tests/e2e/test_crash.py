"""kill -9 in the middle of a burst: history holds each cmid once, seqs 1..N, every ack stored."""

from __future__ import annotations

import signal
from pathlib import Path
from urllib.parse import urlparse

from tests.support.chat import all_history, client_factory, expect_event
from tests.support.platform import start_platform

TOTAL = 1000
SENDERS = 3
LIMITS = {"HUBBUB_SENDS_PER_SECOND": "1000000", "HUBBUB_SEND_BURST": "1000000"}


def test_kill_9_mid_burst_loses_nothing_and_stores_nothing_twice(tmp_path: Path) -> None:
    platform = start_platform(tmp_path, extra_env=LIMITS)
    http = urlparse(platform.http_url)
    with client_factory(platform.http_url) as make:
        senders = [make() for _ in range(SENDERS)]
        body = {"type": "group", "title": "burst", "member_ids": [s.user_id for s in senders[1:]]}
        cid = senders[0].request("POST", "/v1/conversations", json=body).json()["id"]
        sent = [senders[index % SENDERS].send(cid, f"burst {index}").cmid for index in range(TOTAL)]
        for _ in range(100):
            expect_event(senders[0], "ack")
        platform.process.stop(signal.SIGKILL)
        unacked_at_kill = sum(len(sender.outbox) for sender in senders)
        assert unacked_at_kill > 0, "the burst was over before the kill"

        restarted = start_platform(
            tmp_path,
            extra_env=LIMITS
            | {"HUBBUB_MQTT_PORT": str(platform.mqtt_port), "HUBBUB_HTTP_PORT": str(http.port)},
        )
        try:
            for sender in senders:
                assert sender.outbox.emptied.wait(120), f"{len(sender.outbox)} messages never acknowledged"
            history = all_history(senders[0], cid)
            assert [message["seq"] for message in history] == list(range(1, TOTAL + 1))
            assert sorted(message["cmid"] for message in history) == sorted(sent)
            stored = {message["cmid"]: (message["message_id"], message["seq"]) for message in history}
            for sender in senders:
                for cmid, ack in sender.acks.items():
                    assert stored[cmid] == (ack["message_id"], ack["seq"])
        finally:
            assert restarted.stop() == 0, restarted.process.log()
