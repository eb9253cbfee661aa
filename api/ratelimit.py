"""Login throttling: who is asking, how often an address tries, and delays after wrong passwords.

In memory, per API process: enough to stop online password guessing against one node;
a shared store would be needed to count across nodes.

Wrong passwords are throttled per (username, address) with delays that grow with each
failure, not with a lock per username: a lock per username lets anyone lock the real owner
out by guessing wrong on purpose, while growing delays per pair slow a guesser down without
touching the owner, who logs in from another address.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from starlette.requests import Request

__all__ = ["FailureBackoff", "IPNetwork", "SlidingWindowLimiter", "client_address"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAX_KEYS = 100_000  # bound memory under a key-spraying attack


def client_address(request: Request, trusted_proxies: Sequence[IPNetwork]) -> str:
    """The address a request comes from, believing ``X-Forwarded-For`` only from trusted proxies.

    The peer is the address; if the peer is a trusted proxy, the forwarded chain is read from
    the right and the first hop that is not itself a trusted proxy is the client. With no
    trusted proxies (the default) the header is ignored, so a client cannot pick its own address.
    """
    peer = request.client.host if request.client else "unknown"
    if not trusted_proxies or not _is_trusted(peer, trusted_proxies):
        return peer
    hops = [hop.strip() for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",")]
    address = peer
    for hop in reversed(hops):
        if not _is_address(hop):
            break  # a garbled chain: the last proxy we trust is as far as we can see
        address = hop
        if not _is_trusted(hop, trusted_proxies):
            break
    return address


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted_proxies: Sequence[IPNetwork]) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in trusted_proxies)


class SlidingWindowLimiter:
    """Allows ``limit`` hits per key in any ``window_s`` seconds."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._window = window_s
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str) -> int | None:
        """Record an attempt; ``None`` if allowed, else whole seconds until one would be."""
        now = self._clock()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self._window:
            hits.popleft()
        if len(hits) >= self._limit:
            return max(1, math.ceil(hits[0] + self._window - now))
        hits.append(now)
        if len(self._hits) > _MAX_KEYS:
            self._forget_idle(now)
        return None

    def _forget_idle(self, now: float) -> None:
        idle = [key for key, hits in self._hits.items() if not hits or hits[-1] <= now - self._window]
        for key in idle:
            del self._hits[key]


@dataclass(slots=True)
class _Failures:
    count: int
    blocked_until: float
    last_at: float


class FailureBackoff:
    """Growing delays after consecutive failures of one key; a success forgets the key.

    The first ``free_failures`` cost nothing; each one after waits twice as long as the
    last, from ``base_delay_s`` up to ``max_delay_s``.
    """

    def __init__(
        self,
        *,
        free_failures: int,
        base_delay_s: float,
        max_delay_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._free = free_failures
        self._base = base_delay_s
        self._max = max_delay_s
        self._clock = clock
        self._failures: dict[Hashable, _Failures] = {}

    def retry_after(self, key: Hashable) -> int | None:
        """``None`` if ``key`` may try now, else whole seconds until it may."""
        failures = self._failures.get(key)
        now = self._clock()
        if failures is None or failures.blocked_until <= now:
            return None
        return max(1, math.ceil(failures.blocked_until - now))

    def failed(self, key: Hashable) -> None:
        """Count a failure; past the free ones, ``key`` must wait before its next try."""
        now = self._clock()
        failures = self._failures.setdefault(key, _Failures(0, now, now))
        failures.count += 1
        failures.last_at = now
        beyond = failures.count - self._free
        if beyond > 0:
            failures.blocked_until = now + min(self._max, self._base * 2 ** min(beyond - 1, 62))
        if len(self._failures) > _MAX_KEYS:
            self._forget_idle(now)

    def succeeded(self, key: Hashable) -> None:
        """The right password: start from scratch."""
        self._failures.pop(key, None)

    def _forget_idle(self, now: float) -> None:
        idle = [key for key, failures in self._failures.items() if failures.last_at <= now - self._max]
        for key in idle:
            del self._failures[key]
