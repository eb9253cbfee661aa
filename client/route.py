"""Which broker node a device connects to next, and how long it waits first.

Login and refresh answer every live broker node, least loaded first, and the access token is
valid on each of them. So a device whose node goes away needs nothing new from the server to
move: it tries the next node of its list. Only once every listed node has failed since its last
connection does it ask ``GET /v1/brokers`` (a read from the registry, no durable write) for a
fresh list. Waits are "full jitter" exponential backoff (a uniform draw below a doubling cap):
the devices of a dead node arrive at the survivors spread out rather than all in the same
instant, and a device that keeps failing asks ever less often.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["BrokerRoute", "Endpoint", "Step"]

_MAX_DOUBLINGS = 16  # the cap is reached long before; bounds the power
Endpoint = dict[str, Any]  # as the API names a broker node: {"host", "port", "ws_url"}


def _key(endpoint: Endpoint) -> tuple[str, int, str]:
    return (str(endpoint["host"]), int(endpoint["port"]), str(endpoint["ws_url"]))


@dataclass(frozen=True)
class Step:
    """What to do after a connection failed or ended: wait ``delay_s``, then connect to ``endpoint``.

    ``ask_registry``: every listed node has failed since the last connection; ask for a fresh
    list first (``BrokerRoute.replace``) and connect to its first node instead.
    """

    delay_s: float
    endpoint: Endpoint
    ask_registry: bool


class BrokerRoute:
    """The broker nodes a device may use, in order, and its backoff (not thread-safe: one owner)."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        first_delay_s: float = 0.5,
        max_delay_s: float = 5.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self._rand = rand
        self._endpoints: list[Endpoint] = []
        self._index = 0
        self._moves = 0  # moves since the last connection (or the last fresh list)
        self._failures = 0  # failures since the last connection: the backoff's exponent
        self.replace(endpoints)

    @property
    def endpoints(self) -> list[Endpoint]:
        """The listed nodes, in the order they are tried."""
        return list(self._endpoints)

    @property
    def current(self) -> Endpoint:
        """The node to connect to now."""
        return self._endpoints[self._index]

    def replace(self, endpoints: Sequence[Endpoint]) -> None:
        """A fresh list (duplicates dropped): its first node is next. The backoff goes on growing."""
        unique: dict[tuple[str, int, str], Endpoint] = {}
        for endpoint in endpoints:
            unique.setdefault(_key(endpoint), dict(endpoint))
        if not unique:
            raise ValueError("a broker route needs at least one endpoint")
        self._endpoints = list(unique.values())
        self._index = 0
        self._moves = 0

    def connected(self) -> None:
        """The current node took the device: the next failure starts the backoff afresh."""
        self._moves = 0
        self._failures = 0

    def failed(self) -> Step:
        """The current node refused, could not be reached, or dropped the connection: the next step."""
        self._index = (self._index + 1) % len(self._endpoints)
        self._moves += 1
        ask = self._moves >= len(self._endpoints)
        if ask:
            self._moves = 0
        ceiling = min(self.max_delay_s, self.first_delay_s * 2 ** min(self._failures, _MAX_DOUBLINGS))
        self._failures += 1
        return Step(delay_s=self._rand() * ceiling, endpoint=self.current, ask_registry=ask)
