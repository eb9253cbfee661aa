"""A client's own filters in the subscription index, as they grow and shrink.

A device holds two filters (its inbox and its own presence), kept as a tuple; one filter is
kept as the string itself and a service's many as a set. Whatever the form, subscribing
again, unsubscribing one by one and ending the session must leave the index exactly right.
"""

from __future__ import annotations

from broker_plugins.sessions import Identity, MqttSession
from broker_plugins.subscriptions import SubscriptionIndex


def _session(client_id: str) -> MqttSession:
    return MqttSession(client_id, Identity("service:t", None), clean_session=True)


def _holders(index: SubscriptionIndex, topic: str) -> list[tuple[str, int]]:
    return sorted((session.client_id, qos) for session, qos in index.match(topic))


def test_a_devices_two_filters_and_their_removal_one_by_one() -> None:
    index, phone = SubscriptionIndex(), _session("phone")
    index.add("user/1/inbox", phone, 1)
    index.add("presence/1", phone, 0)
    index.add("presence/1", phone, 1)  # again: the QoS is replaced, nothing added
    assert index.filters_of("phone") == {"user/1/inbox", "presence/1"}
    assert _holders(index, "presence/1") == [("phone", 1)]
    assert index.remove("presence/1", "phone")
    assert not index.remove("presence/1", "phone")
    assert index.filters_of("phone") == {"user/1/inbox"}
    assert index.remove("user/1/inbox", "phone")
    assert index.filters_of("phone") == frozenset()
    assert len(index) == 0


def test_many_filters_grow_past_a_tuple_and_all_go_with_the_session() -> None:
    index, service, other = SubscriptionIndex(), _session("service"), _session("other")
    topics = [f"user/{number}/inbox" for number in range(20)]
    for count, topic in enumerate(topics, start=1):
        index.add(topic, service, 1)
        assert index.filters_of("service") == set(topics[:count])
    index.add("user/3/inbox", other, 0)
    index.add("sport/#", service, 0)
    assert index.filters_of("service") == {*topics, "sport/#"}
    for topic in topics[:15]:
        assert index.remove(topic, "service")
    assert index.filters_of("service") == {*topics[15:], "sport/#"}
    assert index.remove_client("service") == 6
    assert index.filters_of("service") == frozenset()
    assert _holders(index, "user/3/inbox") == [("other", 0)]
    assert not index.has_wildcards
    assert len(index) == 1


def test_a_few_filters_all_go_with_the_session() -> None:
    index, tablet = SubscriptionIndex(), _session("tablet")
    for topic in ("user/2/inbox", "presence/2", "presence/3"):
        index.add(topic, tablet, 1)
    assert index.remove("presence/2", "tablet")
    assert index.filters_of("tablet") == {"user/2/inbox", "presence/3"}
    assert index.remove_client("tablet") == 2
    assert len(index) == 0
