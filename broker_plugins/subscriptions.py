"""The subscription index: who receives a message on a topic, in time proportional to them.

Stock amqtt keeps ``{filter: [(session, qos), ...]}`` and, for every message, tests the
topic against *every* filter on the node; every CONNECT walks all filters too. A chat node
holds one exact filter per device (``user/{uid}/inbox``), so that made each message and
each connection cost O(subscriptions on the node). Here:

- exact filters live in a hash map (``filters``): one lookup per message;
- wildcard filters (``+``, ``#``; services only) live in a trie walked level by level;
- each client's own filters are remembered, so unsubscribing everything when a session
  ends costs O(its filters); a client holding one filter is remembered by that string alone,
  and a few (a device: its inbox and its own presence) by a tuple (56 bytes for two, and no
  object the garbage collector keeps watching) rather than a set (216 bytes); a set only
  past ``_FEW_FILTERS`` (a service's many).

A client holds at most one subscription per filter; subscribing again replaces its QoS
[MQTT-3.8.4-3]. Topics starting with ``$`` never match a filter starting with a wildcard
[MQTT-4.7.2-1].
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker_plugins.sessions import MqttSession

__all__ = ["Subscriber", "SubscriptionIndex", "is_valid_filter", "matches"]

Subscriber = tuple["MqttSession", int]  # (session, granted QoS)
_Own = str | tuple[str, ...] | set[str]  # a client's filters: one, a few, or many
_FEW_FILTERS = 8  # a client's filters kept in a tuple up to this many (each add copies it)


def is_valid_filter(topic_filter: str) -> bool:
    """A non-empty filter whose ``#`` is alone and last, and whose ``+`` fill whole levels."""
    if not topic_filter:
        return False
    if "#" not in topic_filter and "+" not in topic_filter:
        return True
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != last):
            return False
        if "+" in level and level != "+":
            return False
    return True


def matches(topic: str, topic_filter: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (reference implementation, used for retained scans)."""
    if topic.startswith("$") and topic_filter[:1] in {"+", "#"}:
        return False
    if "#" not in topic_filter and "+" not in topic_filter:
        return topic == topic_filter
    topic_levels = topic.split("/")
    filter_levels = topic_filter.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels) or level not in {"+", topic_levels[index]}:
            return False
    return len(filter_levels) == len(topic_levels)


def _each(own: _Own) -> tuple[str, ...] | set[str]:
    """A client's filters as a collection (one filter is kept as the string itself)."""
    return (own,) if isinstance(own, str) else own


class _Node:
    """One level of the wildcard trie; ``subscribers`` of the filter ending here, by client id."""

    __slots__ = ("children", "subscribers")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.subscribers: dict[str, Subscriber] = {}


class SubscriptionIndex:
    """Exact filters in a hash map, wildcard filters in a trie, and each client's filters."""

    def __init__(self) -> None:
        self.filters: dict[str, list[Subscriber]] = {}  # exact and wildcard filters alike
        self._root = _Node()
        self._wildcards = 0
        self._by_client: dict[str, _Own] = {}  # one filter as itself, a few as a tuple, many as a set

    def __len__(self) -> int:
        return sum(len(subscribers) for subscribers in self.filters.values())

    def add(self, topic_filter: str, session: MqttSession, qos: int) -> None:
        """Subscribe ``session`` (or replace its QoS on ``topic_filter``)."""
        client_id = session.client_id
        subscribers = self.filters.get(topic_filter)
        if subscribers is None:
            self.filters[topic_filter] = [(session, qos)]  # sized for one: most topics are one device's inbox
        else:
            for index, (holder, _) in enumerate(subscribers):
                if holder.client_id == client_id:
                    subscribers[index] = (session, qos)
                    break
            else:
                subscribers.append((session, qos))
        self._remember(client_id, topic_filter)
        if "+" in topic_filter or "#" in topic_filter:
            node = self._root
            for level in topic_filter.split("/"):
                node = node.children.setdefault(level, _Node())
            if client_id not in node.subscribers:
                self._wildcards += 1
            node.subscribers[client_id] = (session, qos)

    def _remember(self, client_id: str, topic_filter: str) -> None:
        """Add ``topic_filter`` to ``client_id``'s own filters (a string, then a tuple, then a set)."""
        own = self._by_client.get(client_id)
        if own is None:
            self._by_client[client_id] = topic_filter
        elif isinstance(own, str):
            if own != topic_filter:
                self._by_client[client_id] = (own, topic_filter)
        elif isinstance(own, tuple):
            if topic_filter not in own:
                few = len(own) < _FEW_FILTERS
                self._by_client[client_id] = (*own, topic_filter) if few else {*own, topic_filter}
        else:
            own.add(topic_filter)

    def remove(self, topic_filter: str, client_id: str) -> bool:
        """Unsubscribe ``client_id`` from ``topic_filter``; whether it was subscribed."""
        subscribers = self.filters.get(topic_filter)
        if not subscribers:
            return False
        for index, (holder, _) in enumerate(subscribers):
            if holder.client_id == client_id:
                del subscribers[index]
                break
        else:
            return False
        if not subscribers:
            del self.filters[topic_filter]
        own = self._by_client.get(client_id)
        if own == topic_filter:
            del self._by_client[client_id]
        elif isinstance(own, tuple):
            left = tuple(held for held in own if held != topic_filter)
            self._by_client[client_id] = left[0] if len(left) == 1 else left
        elif isinstance(own, set):
            own.discard(topic_filter)
            if len(own) == 1:
                self._by_client[client_id] = own.pop()
        if "+" in topic_filter or "#" in topic_filter:
            self._remove_wildcard(topic_filter, client_id)
        return True

    def _remove_wildcard(self, topic_filter: str, client_id: str) -> None:
        path = [self._root]
        levels = topic_filter.split("/")
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return
            path.append(child)
        if path[-1].subscribers.pop(client_id, None) is not None:
            self._wildcards -= 1
        # Prune empty branches so a churn of wildcard filters leaves no garbage behind.
        for depth in range(len(levels), 0, -1):
            node = path[depth]
            if node.subscribers or node.children:
                break
            del path[depth - 1].children[levels[depth - 1]]

    def remove_client(self, client_id: str) -> int:
        """Unsubscribe ``client_id`` from everything: O(its own filters). Returns how many."""
        own = self._by_client.pop(client_id, None)
        if own is None:
            return 0
        removed = 0
        for topic_filter in _each(own):
            subscribers = self.filters.get(topic_filter)
            if not subscribers:
                continue
            for index, (holder, _) in enumerate(subscribers):
                if holder.client_id == client_id:
                    del subscribers[index]
                    removed += 1
                    break
            if not subscribers:
                del self.filters[topic_filter]
            if "+" in topic_filter or "#" in topic_filter:
                self._remove_wildcard(topic_filter, client_id)
        return removed

    def filters_of(self, client_id: str) -> frozenset[str]:
        """The filters ``client_id`` holds now."""
        own = self._by_client.get(client_id)
        if own is None:
            return frozenset()
        return frozenset(_each(own))

    def qos_of(self, topic_filter: str, client_id: str) -> int | None:
        """The QoS ``client_id`` holds ``topic_filter`` with, or ``None``."""
        for holder, qos in self.filters.get(topic_filter, ()):
            if holder.client_id == client_id:
                return qos
        return None

    @property
    def has_wildcards(self) -> bool:
        """Whether any wildcard filter is held (usually not: devices may not use wildcards)."""
        return self._wildcards > 0

    def match(self, topic: str) -> Sequence[Subscriber]:
        """Every subscription matching ``topic``: one entry per (client, filter)."""
        exact = self.filters.get(topic) or ()
        if not self._wildcards:
            return exact
        if "+" in topic or "#" in topic:
            # Only a wildcard filter can equal such a topic, and the trie yields it already.
            return list(self.match_wildcards(topic))
        return [*exact, *self.match_wildcards(topic)]

    def match_wildcards(self, topic: str) -> Iterator[Subscriber]:
        """The (session, QoS) of every wildcard filter matching ``topic``, each once."""
        levels = topic.split("/")
        last = len(levels)
        dollar = topic.startswith("$")
        # Depth-first over (node, depth); bounded by the trie's size, itself bounded by the filters.
        stack: list[tuple[_Node, int]] = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            children = node.children
            no_wildcard_here = dollar and depth == 0
            if not no_wildcard_here:
                hash_node = children.get("#")
                if hash_node is not None:
                    yield from hash_node.subscribers.values()
            if depth == last:
                continue
            plus = None if no_wildcard_here else children.get("+")
            level = levels[depth]
            # A topic level that is literally "+" or "#" (a service's internal route; clients
            # cannot publish one) names the wildcard node itself: walking it as the exact level
            # too would deliver its subscriptions twice.
            exact = None if level in {"+", "#"} else children.get(level)
            for child in (plus, exact):
                if child is None:
                    continue
                if depth + 1 == last:
                    yield from child.subscribers.values()
                    # "a/#" also matches "a" itself [MQTT-4.7.1-2].
                    tail = child.children.get("#")
                    if tail is not None:
                        yield from tail.subscribers.values()
                else:
                    stack.append((child, depth + 1))
