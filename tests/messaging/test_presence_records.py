"""The presence records that cross nodes (hubbub/presence.py): round trips, and clear refusals."""

from __future__ import annotations

import pytest

from hubbub import subjects
from hubbub.events import presence_payload
from hubbub.presence import DeviceChange, NodeDevices, PresenceChange


def test_a_device_change_round_trips() -> None:
    change = DeviceChange("node-a", "b00t", 3, 7, "phone", connected=False)
    assert DeviceChange.from_json(change.to_json()) == change


def test_a_resync_answer_round_trips() -> None:
    answer = NodeDevices("node-a", "b00t", 12, ((7, "phone"), (8, "laptop")))
    assert NodeDevices.from_json(answer.to_json()) == answer


def test_a_presence_change_is_the_retained_payload() -> None:
    change = PresenceChange(7, online=True, at_ms=1_750_000_000_123)
    assert change.to_payload() == presence_payload(7, online=True, last_active_ms=1_750_000_000_123)
    assert PresenceChange.from_payload(change.to_payload()) == change
    never = PresenceChange(8, online=False, at_ms=None)
    assert PresenceChange.from_payload(never.to_payload()) == never


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"[", "not a device change"),
        (b"[]", "not an object"),
        (b'{"node": "a", "boot": "b", "seq": 1, "user_id": 7, "device_id": "d"}', "no connected"),
        (b'{"node": "a", "boot": "b", "seq": -1, "user_id": 7, "device_id": "d", "connected": true}', "seq"),
        (b'{"node": "", "boot": "b", "seq": 1, "user_id": 7, "device_id": "d", "connected": true}', "node"),
        (b'{"node": "a", "boot": "b", "seq": 1, "user_id": 7, "device_id": "d", "connected": 1}', "boolean"),
    ],
)
def test_a_broken_device_change_is_refused_with_its_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        DeviceChange.from_json(data)


def test_broken_resync_answers_and_payloads_are_refused() -> None:
    with pytest.raises(ValueError, match="each device"):
        NodeDevices.from_json(b'{"node": "a", "boot": "b", "seq": 1, "devices": [[7]]}')
    with pytest.raises(ValueError, match="devices must be a list"):
        NodeDevices.from_json(b'{"node": "a", "boot": "b", "seq": 1, "devices": {}}')
    with pytest.raises(ValueError, match="status"):
        PresenceChange.from_payload(b'{"user_id": "7", "status": "away", "last_active_at": null}')
    with pytest.raises(ValueError, match="last_active_at"):
        PresenceChange.from_payload(b'{"user_id": "7", "status": "online", "last_active_at": 5}')


def test_presence_bucket_keys_and_change_subjects_parse_back() -> None:
    assert subjects.presence_key(3, 42) == "3.42"
    assert subjects.parse_presence_key("3.42") == (3, 42)
    assert subjects.parse_kv_change("hubbub_presence", "$KV.hubbub_presence.3.42") == "3.42"
    assert subjects.kv_changes(subjects.PRESENCE_BUCKET) == "$KV.hubbub_presence.>"
    assert subjects.every_presence_resync() == "hubbub.presence.resync.*"
    assert subjects.parse_shard(subjects.presence_resync(5)) == 5
    for bad in ("3", "3.x", "x.3", ".3"):
        with pytest.raises(ValueError, match="not a presence key"):
            subjects.parse_presence_key(bad)
    with pytest.raises(ValueError, match="not a change of bucket"):
        subjects.parse_kv_change("hubbub_presence", "$KV.other.3.42")
    with pytest.raises(ValueError, match="non-negative"):
        subjects.presence_key(3, -1)
