"""Test doubles of our own Protocols: a stepped clock, the MQTT side, the account store.

``ManualClock`` implements ``messaging.clock.Clock``; ``FakeConnections`` implements
``hubbub.connections.DeviceConnections`` and records what the core delivered;
``FakeDirectory`` implements ``hubbub.stores.Directory`` from dicts; ``QuietEvents`` is the
messaging core as the MQTT server sees it (``hubbub.connections.DeviceEvents``) doing nothing,
for a broker test to override what it watches.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import orjson

from hubbub.connections import DeviceConnections
from hubbub.sessions import DeviceSessions
from hubbub.stores import Directory
from messaging.clock import Clock

__all__ = ["Delivery", "FakeConnections", "FakeDeviceSessions", "FakeDirectory", "ManualClock", "QuietEvents"]

START_WALL_MS = 1_750_000_000_000


class _Timer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """Time stands still until ``advance``, which fires the timers that fall due, in order."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._order = itertools.count()
        self._timers: list[tuple[float, int, _Timer, Callable[[int], None], int]] = []

    def monotonic(self) -> float:
        return self.now

    def wall_ms(self) -> int:
        return START_WALL_MS + round((self.now - 1000.0) * 1000)

    def call_later(self, delay_s: float, callback: Callable[[int], None], argument: int) -> _Timer:
        timer = _Timer()
        heapq.heappush(self._timers, (self.now + delay_s, next(self._order), timer, callback, argument))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``, running every timer due by then at its own time."""
        until = self.now + seconds
        while self._timers and self._timers[0][0] <= until:
            due, _, timer, callback, argument = heapq.heappop(self._timers)
            self.now = max(self.now, due)
            if not timer.cancelled:
                callback(argument)
        self.now = until

    @property
    def pending(self) -> int:
        """Timers not fired nor cancelled."""
        return sum(1 for timer in self._timers if not timer[2].cancelled)


@dataclass(frozen=True)
class Delivery:
    """One ``to_inbox`` call."""

    user_id: int
    event: dict[str, object]
    only_device: str | None
    skip_device: str | None


@dataclass
class FakeConnections:
    """The MQTT side: which devices are connected, and what was delivered or retained."""

    connected: set[str] = field(default_factory=set)
    deliveries: list[Delivery] = field(default_factory=list)
    presence: dict[int, list[dict[str, object]]] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    devices_of: dict[int, set[str]] = field(default_factory=dict)

    def to_inbox(
        self, user_id: int, payload: bytes, *, only_device: str | None = None, skip_device: str | None = None
    ) -> int:
        self.deliveries.append(Delivery(user_id, orjson.loads(payload), only_device, skip_device))
        reached = {
            device
            for device in self.devices_of.get(user_id, set()) & self.connected
            if device != skip_device and only_device in {None, device}
        }
        return len(reached)

    def set_presence(self, user_id: int, payload: bytes) -> None:
        self.presence.setdefault(user_id, []).append(orjson.loads(payload))

    def is_connected(self, device_id: str) -> bool:
        return device_id in self.connected

    def drop(self, device_id: str) -> None:
        self.dropped.append(device_id)
        self.connected.discard(device_id)

    def events(self, kind: str) -> list[Delivery]:
        """The deliveries of one event kind, in order."""
        return [delivery for delivery in self.deliveries if delivery.event.get("kind") == kind]


@dataclass
class FakeDirectory:
    """Members per conversation, last activity per user; counts membership lookups."""

    conversations: dict[int, frozenset[int]] = field(default_factory=dict)
    last_seen: dict[int, int] = field(default_factory=dict)
    member_lookups: int = 0

    async def members(self, conversation_id: int) -> frozenset[int] | None:
        self.member_lookups += 1
        return self.conversations.get(conversation_id)

    async def can_see_presence(self, viewer_id: int, subject_id: int) -> bool:
        return viewer_id == subject_id

    async def last_active(self, user_id: int) -> int | None:
        return self.last_seen.get(user_id)

    async def record_last_active(self, activity: Mapping[int, int]) -> None:
        self.last_seen.update(activity)


@dataclass
class FakeDeviceSessions:
    """The account store's answer at CONNECT: every device is signed in but the ``ended`` ones."""

    ended: set[str] = field(default_factory=set)

    async def is_signed_in(self, user_id: int, device_id: str) -> bool:
        del user_id
        return device_id not in self.ended


def _conforms(
    clock: ManualClock, connections: FakeConnections, directory: FakeDirectory, devices: FakeDeviceSessions
) -> None:
    """The doubles implement the Protocols they stand for: mypy checks this assignment."""
    _: tuple[Clock, DeviceConnections, Directory, DeviceSessions] = (clock, connections, directory, devices)


class QuietEvents:
    """``DeviceEvents`` that ignores every report and answers every presence snapshot "offline"."""

    def device_connected(self, user_id: int, device_id: str) -> Awaitable[None] | None:
        del user_id, device_id
        return None

    def device_disconnected(self, user_id: int, device_id: str) -> None:
        del user_id, device_id

    def send(self, user_id: int, device_id: str, conversation_id: int, payload: bytes) -> None:
        del user_id, device_id, conversation_id, payload

    def typing(self, user_id: int, device_id: str, conversation_id: int) -> None:
        del user_id, device_id, conversation_id

    def inbox_subscribed(self, user_id: int, device_id: str) -> None:
        del user_id, device_id

    async def presence_snapshot(self, user_id: int) -> bytes:
        return b'{"user_id":"%d","status":"offline"}' % user_id
