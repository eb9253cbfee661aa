"""The subscription index (broker_plugins/subscriptions.py): matching by the MQTT 3.1.1 rules, cheaply."""

from __future__ import annotations

import pytest

from broker_plugins.sessions import Identity, MqttSession
from broker_plugins.subscriptions import SubscriptionIndex, is_valid_filter, matches

_SESSIONS: dict[str, MqttSession] = {}


def _session(client_id: str) -> MqttSession:
    """One session per client id, so that subscribers compare by identity."""
    return _SESSIONS.setdefault(
        client_id, MqttSession(client_id, Identity("service:t", None), clean_session=True)
    )


def _ids(index: SubscriptionIndex, topic: str) -> list[tuple[str, int]]:
    return sorted((session.client_id, qos) for session, qos in index.match(topic))


@pytest.fixture
def index() -> SubscriptionIndex:
    return SubscriptionIndex()


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
    index.add(topic_filter, _session("c"), 1)
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
    index.add("user/1/inbox", _session("phone"), 1)
    index.add("user/1/inbox", _session("laptop"), 0)
    index.add("user/+/inbox", _session("service"), 2)
    index.add("user/#", _session("service"), 0)
    assert _ids(index, "user/1/inbox") == [("laptop", 0), ("phone", 1), ("service", 0), ("service", 2)]
    assert _ids(index, "user/2/inbox") == [("service", 0), ("service", 2)]
    assert _ids(index, "presence/1") == []


def test_subscribing_again_replaces_the_qos(index: SubscriptionIndex) -> None:
    # MQTT-3.8.4-3: a new subscription with the same filter replaces the old one.
    index.add("a/b", _session("c"), 0)
    index.add("a/b", _session("c"), 2)
    index.add("a/+", _session("c"), 0)
    index.add("a/+", _session("c"), 1)
    assert _ids(index, "a/b") == [("c", 1), ("c", 2)]
    assert len(index) == 2


def test_unsubscribe_and_removing_a_client_leave_nothing_behind(index: SubscriptionIndex) -> None:
    index.add("a/b", _session("c"), 1)
    index.add("a/+/c/#", _session("c"), 1)
    index.add("a/b", _session("other"), 1)
    assert index.remove("a/b", "c")
    assert not index.remove("a/b", "c")
    assert index.filters_of("c") == frozenset({"a/+/c/#"})
    assert index.remove_client("c") == 1
    assert index.filters_of("c") == frozenset()
    assert _ids(index, "a/x/c/d") == []
    assert not index.has_wildcards
    assert index.filters == {"a/b": [(_session("other"), 1)]}
    assert index.remove_client("other") == 1
    assert index.filters == {}


def test_qos_of_says_what_a_client_holds(index: SubscriptionIndex) -> None:
    index.add("x/y", _session("c"), 1)
    assert index.filters == {"x/y": [(_session("c"), 1)]}
    assert index.qos_of("x/y", "c") == 1
    assert index.qos_of("x/y", "d") is None


@pytest.mark.parametrize("topic", ["a/+/#", "a/+", "a/#", "+", "#", "+/+", "a/+/b"])
def test_a_topic_with_literal_wildcard_characters_matches_each_subscription_once(
    index: SubscriptionIndex, topic: str
) -> None:
    # A will topic "a/+/#" once reached one "a/+/#" subscriber five times: the exact lookup,
    # then the trie walking the "+" child both as the wildcard and as the literal level.
    filters = ["a/+/#", "a/+", "a/#", "+", "#", "+/+", "a/+/b", "+/#"]
    for number, topic_filter in enumerate(filters):
        index.add(topic_filter, _session(f"s{number}"), 1)
    expected = sorted((f"s{number}", 1) for number, f in enumerate(filters) if matches(topic, f))
    assert _ids(index, topic) == expected
