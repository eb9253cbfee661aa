"""Growing delays after wrong passwords, per (username, address), on an injected clock."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from starlette.requests import Request

from api.ratelimit import FailureBackoff, IPNetwork, client_address


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_delays_start_after_the_free_failures_and_double_up_to_the_cap() -> None:
    clock = Clock()
    backoff = FailureBackoff(free_failures=3, base_delay_s=1.0, max_delay_s=10.0, clock=clock)
    key = ("alice", "203.0.113.5")
    waits = []
    for _ in range(8):
        assert backoff.retry_after(key) is None
        backoff.failed(key)
        wait = backoff.retry_after(key)
        waits.append(wait)
        clock.now += wait or 0
    assert waits == [None, None, None, 1, 2, 4, 8, 10]


def test_a_success_forgets_the_failures_and_other_pairs_are_untouched() -> None:
    clock = Clock()
    backoff = FailureBackoff(free_failures=1, base_delay_s=5.0, max_delay_s=60.0, clock=clock)
    attacker = ("alice", "203.0.113.5")
    for _ in range(3):
        backoff.failed(attacker)
    assert backoff.retry_after(attacker) == 10
    assert backoff.retry_after(("alice", "198.51.100.7")) is None  # the owner, elsewhere
    assert backoff.retry_after(("bob", "203.0.113.5")) is None
    clock.now += 10
    backoff.succeeded(attacker)
    backoff.failed(attacker)
    assert backoff.retry_after(attacker) is None  # one free failure again


def _request(peer: str, *forwarded: str) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request(
        {"type": "http", "method": "POST", "path": "/", "headers": headers, "client": (peer, 5000)}
    )


PROXIES: list[IPNetwork] = [ip_network("10.0.0.0/8"), ip_network("::1/128")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("203.0.113.5", ["198.51.100.7"], [], "203.0.113.5"),  # no proxies trusted: the header is ignored
        ("203.0.113.5", ["198.51.100.7"], PROXIES, "203.0.113.5"),  # the peer is no proxy of ours
        ("10.0.0.2", ["198.51.100.7"], PROXIES, "198.51.100.7"),
        ("10.0.0.2", ["1.2.3.4, 198.51.100.7, 10.0.0.9"], PROXIES, "198.51.100.7"),  # spoofed left part
        ("10.0.0.2", ["1.2.3.4", "198.51.100.7"], PROXIES, "198.51.100.7"),  # header given twice
        ("10.0.0.2", ["not-an-address"], PROXIES, "10.0.0.2"),
        ("10.0.0.2", [], PROXIES, "10.0.0.2"),
        ("::1", ["2001:db8::7"], PROXIES, "2001:db8::7"),
    ],
)
def test_the_client_address_believes_forwarded_headers_only_from_trusted_proxies(
    peer: str, forwarded: list[str], trusted: list[IPNetwork], expected: str
) -> None:
    assert client_address(_request(peer, *forwarded), trusted) == expected
