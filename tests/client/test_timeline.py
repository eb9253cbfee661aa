from __future__ import annotations

from typing import Any

from client import Outbox, Timeline


def message(seq: int) -> dict[str, Any]:
    return {"seq": seq, "text": f"m{seq}"}


def test_in_order_messages_leave_no_gap() -> None:
    timeline = Timeline()
    for seq in (1, 2, 3):
        assert timeline.add(message(seq))
    assert (timeline.held, timeline.gap) == (3, None)


def test_a_later_message_first_is_a_gap_until_the_missing_one_arrives() -> None:
    timeline = Timeline()
    timeline.add(message(1))
    timeline.add(message(3))
    assert timeline.gap == (1, 3)
    timeline.add(message(2))
    assert timeline.held == 3
    assert timeline.gap is None
    assert [m["seq"] for m in timeline.ordered()] == [1, 2, 3]


def test_duplicates_are_merged_once() -> None:
    timeline = Timeline()
    assert timeline.add(message(1))
    assert not timeline.add(message(1))
    assert len(timeline.ordered()) == 1


def test_the_outbox_empties_as_acks_arrive() -> None:
    outbox = Outbox()
    first = outbox.add("5", "a")
    second = outbox.add("5", "b")
    assert not outbox.emptied.is_set()
    assert [p.cmid for p in outbox.unsettled()] == [first.cmid, second.cmid]
    outbox.settle(first.cmid)
    outbox.settle(second.cmid)
    assert outbox.emptied.is_set()
    assert outbox.settle("unknown") is None
