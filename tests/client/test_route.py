"""The order in which a device tries broker nodes, and its jittered backoff (``client.route``)."""

from __future__ import annotations

import pytest

from client.route import BrokerRoute, Endpoint


def node(port: int) -> Endpoint:
    return {"host": "127.0.0.1", "port": port, "ws_url": f"ws://127.0.0.1:{port}/mqtt"}


def test_a_lost_node_is_followed_by_the_next_listed_and_the_registry_after_a_whole_round() -> None:
    route = BrokerRoute([node(1), node(2), node(3)], rand=lambda: 1.0)
    assert route.current == node(1)
    steps = [route.failed() for _ in range(3)]
    assert [step.endpoint["port"] for step in steps] == [2, 3, 1]
    assert [step.ask_registry for step in steps] == [False, False, True]


def test_the_wait_is_a_draw_below_a_doubling_cap_reset_by_a_connection() -> None:
    draws = iter([1.0, 1.0, 1.0, 1.0, 0.5, 1.0])
    route = BrokerRoute([node(1), node(2)], first_delay_s=0.5, max_delay_s=1.5, rand=lambda: next(draws))
    assert [route.failed().delay_s for _ in range(4)] == [0.5, 1.0, 1.5, 1.5]
    route.connected()
    assert [route.failed().delay_s for _ in range(2)] == [0.25, 1.0]


def test_one_node_is_retried_and_the_registry_asked_each_time() -> None:
    route = BrokerRoute([node(1)], rand=lambda: 0.0)
    step = route.failed()
    assert (step.endpoint, step.ask_registry, step.delay_s) == (node(1), True, 0.0)


def test_a_fresh_list_starts_at_its_first_node_without_duplicates() -> None:
    route = BrokerRoute([node(1), node(1), node(2)])
    assert route.endpoints == [node(1), node(2)]
    route.failed()
    route.replace([node(3), node(2), node(3)])
    assert (route.current, route.endpoints) == (node(3), [node(3), node(2)])
    with pytest.raises(ValueError, match="at least one"):
        route.replace([])
