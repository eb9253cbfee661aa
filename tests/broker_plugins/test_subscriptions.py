"""The subscription index (broker_plugins/subscriptions.py): matching by the MQTT 3.1.1 rules, cheaply."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from broker_plugins.subscriptions import SubscriptionIndex, is_valid_filter, matches


@dataclass(frozen=True)
class FakeSession:
    client_id: str


def _ids(index: SubscriptionIndex, topic: str) -> list[tuple[str, int]]:
    return sorted((session.client_id, qos) for session, qos in index.match(topic))


@pytest.fixture
def index() -> SubscriptionIndex:
    return SubscriptionIndex({})


@pytest.mark.parametrize(
    ("topic", "topic_filter", "expected"),
    [
        ("sport/tennis/player1", "sport/tennis/player1", True),
        ("sport/tennis/player1", "sport/#", True),
        ("sport", "sport/#", True),  # MQTT-4.7.1-2: "#" also matches the parent level
        ("sport/tennis/player1", "sport/+", False),
        ("sport/tennis", "sport/+", True),
        ("/finance", "+/+", True),
        ("/finance", "/+", True),
        ("/finance", "+", False),
        ("$SYS/broker", "#", False),  # MQTT-4.7.2-1
        ("$SYS/broker", "+/broker", False),
        ("$SYS/broker", "$SYS/#", True),
        ("a/b", "a/b/c", False),
    ],
)
def test_matching_follows_the_specification(
    index: SubscriptionIndex, topic: str, topic_filter: str, expected: bool
) -> None:
    assert matches(topic, topic_filter) is expected
    index.add(topic_filter, FakeSession("c"), 1)
    assert bool(_ids(index, topic)) is expected


@pytest.mark.parametrize(
    ("topic_filter", "valid"),
    [
        ("a/#", True),
        ("#", True),
        ("a/+/b", True),
        ("+", True),
        ("a/#/b", False),
        ("a#", False),
        ("a+/b", False),
        ("", False),
    ],
)
def test_filter_validity(topic_filter: str, valid: bool) -> None:
    assert is_valid_filter(topic_filter) is valid


def test_exact_and_wildcard_subscribers_all_match_once_per_filter(index: SubscriptionIndex) -> None:
    index.add("user/1/inbox", FakeSession("phone"), 1)
    index.add("user/1/inbox", FakeSession("laptop"), 0)
    index.add("user/+/inbox", FakeSession("service"), 2)
    index.add("user/#", FakeSession("service"), 0)
    assert _ids(index, "user/1/inbox") == [("laptop", 0), ("phone", 1), ("service", 0), ("service", 2)]
    assert _ids(index, "user/2/inbox") == [("service", 0), ("service", 2)]
    assert _ids(index, "presence/1") == []


def test_subscribing_again_replaces_the_qos(index: SubscriptionIndex) -> None:
    # MQTT-3.8.4-3: a new subscription with the same filter replaces the old one.
    index.add("a/b", FakeSession("c"), 0)
    index.add("a/b", FakeSession("c"), 2)
    index.add("a/+", FakeSession("c"), 0)
    index.add("a/+", FakeSession("c"), 1)
    assert _ids(index, "a/b") == [("c", 1), ("c", 2)]
    assert len(index) == 2


def test_unsubscribe_and_removing_a_client_leave_nothing_behind(index: SubscriptionIndex) -> None:
    index.add("a/b", FakeSession("c"), 1)
    index.add("a/+/c/#", FakeSession("c"), 1)
    index.add("a/b", FakeSession("other"), 1)
    assert index.remove("a/b", "c")
    assert not index.remove("a/b", "c")
    assert index.filters_of("c") == frozenset({"a/+/c/#"})
    assert index.remove_client("c") == 1
    assert index.filters_of("c") == frozenset()
    assert _ids(index, "a/x/c/d") == []
    assert not index.has_wildcards
    assert index.filters == {"a/b": [(FakeSession("other"), 1)]}
    assert index.remove_client("other") == 1
    assert index.filters == {}


def test_the_index_is_amqtts_own_subscriptions_dict() -> None:
    # Plugins read broker.subscriptions ({filter: [(session, qos)]}); it must stay in sync.
    shared: dict[str, list[tuple[object, int]]] = {}
    kept = SubscriptionIndex(shared)
    kept.add("x/y", FakeSession("c"), 1)
    assert shared == {"x/y": [(FakeSession("c"), 1)]}
    assert kept.qos_of("x/y", "c") == 1
    assert kept.qos_of("x/y", "d") is None
