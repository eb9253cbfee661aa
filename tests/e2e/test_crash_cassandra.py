"""``hubbub up`` with history in a real Cassandra: kill -9 mid-burst, restart, resend unacked.

The burst of ``test_crash`` (its helpers), shorter so it fits the per-test timeout on a busy
machine: every message is stored once, seqs are dense, every ack names the stored message.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from urllib.parse import urlparse

from tests.e2e.test_crash import LIMITS, SENDERS
from tests.support.cassandra import CassandraServer
from tests.support.chat import all_history, client_factory, expect_event
from tests.support.platform import start_platform

TOTAL = 300
ACKED_BEFORE_KILL = 30


def test_kill_9_mid_burst_on_cassandra_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path, cassandra: CassandraServer
) -> None:
    env = LIMITS | {
        "HUBBUB_CASSANDRA_HOSTS": cassandra.host,
        "HUBBUB_CASSANDRA_KEYSPACE": f"e2e_{uuid.uuid4().hex}",
    }
    platform = start_platform(tmp_path, extra_env=env)
    http = urlparse(platform.http_url)
    with client_factory(platform.http_url) as make:
        senders = [make() for _ in range(SENDERS)]
        body = {"type": "group", "title": "burst", "member_ids": [s.user_id for s in senders[1:]]}
        cid = senders[0].request("POST", "/v1/conversations", json=body).json()["id"]
        sent = [senders[index % SENDERS].send(cid, f"burst {index}").cmid for index in range(TOTAL)]
        for _ in range(ACKED_BEFORE_KILL):
            expect_event(senders[0], "ack")
        # The last of the burst, published the moment before the kill: still in flight whatever
        # the commit rate (the first part may all be acknowledged by now on an idle machine).
        sent += [sender.send(cid, f"last {index}").cmid for index, sender in enumerate(senders)]
        platform.process.stop(signal.SIGKILL)
        assert sum(len(sender.outbox) for sender in senders) > 0, "the burst was over before the kill"

        restarted = start_platform(
            tmp_path,
            extra_env=env | {"HUBBUB_MQTT_PORT": str(platform.mqtt_port), "HUBBUB_HTTP_PORT": str(http.port)},
        )
        try:
            for sender in senders:  # the client resends its outbox, same cmids, on reconnect
                assert sender.outbox.emptied.wait(120), f"{len(sender.outbox)} messages never acknowledged"
            history = all_history(senders[0], cid)
            assert [message["seq"] for message in history] == list(range(1, TOTAL + SENDERS + 1))
            assert sorted(message["cmid"] for message in history) == sorted(sent)
            stored = {message["cmid"]: (message["message_id"], message["seq"]) for message in history}
            for sender in senders:
                for cmid, ack in sender.acks.items():
                    assert stored[cmid] == (ack["message_id"], ack["seq"])
        finally:
            assert restarted.stop() == 0, restarted.process.log()
