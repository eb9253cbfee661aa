"""NATS subjects: built and parsed in one place, refusing what is not theirs."""

from __future__ import annotations

import pytest

from hubbub import subjects


def test_sharded_subjects_round_trip() -> None:
    assert subjects.parse_shard(subjects.accepted(17)) == 17
    assert subjects.parse_shard(subjects.committed(0)) == 0
    assert subjects.parse_shard(subjects.presence_events(63)) == 63
    assert subjects.accepted(3).startswith(subjects.every_accepted()[:-1])
    assert subjects.committed(3).startswith(subjects.every_committed()[:-1])


def test_inbox_round_trips_and_refuses_others() -> None:
    assert subjects.parse_inbox(subjects.inbox(123456789012345)) == 123456789012345
    with pytest.raises(ValueError, match="not an inbox"):
        subjects.parse_inbox(subjects.accepted(1))
    with pytest.raises(ValueError, match="not a sharded"):
        subjects.parse_shard(subjects.inbox(5) + ".x")


def test_bad_names_are_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        subjects.accepted(-1)
    with pytest.raises(ValueError, match="process id"):
        subjects.reply("node.1")
    assert subjects.reply("api-1_a") == "hubbub.reply.api-1_a"


def test_dedupe_ids_name_the_idempotency_keys() -> None:
    assert subjects.accepted_msg_id(1, 2, "c-3") == "1:2:c-3"
    assert subjects.committed_msg_id(1, 9) == "1:9"
