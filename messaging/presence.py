"""Presence: a user is online while any of its devices is connected.

The MQTT server reports every device connection and disconnection — clean DISCONNECT,
keepalive expiry or a dropped socket alike. A user whose last device left is published
``offline`` only after a grace period (a train in a tunnel): a reconnect within it
publishes nothing at all. And whatever the churn, each user's state is published at most
once per grace period, so a mass reconnect after a network blip costs one publish per user
that really changed, not a storm.

State per user is kept while the user is online, while a decision is pending, and for a
grace period after its last publish (which bounds the next one). Time comes from the
injected ``Clock``; publishing is a plain call (``Publish``), never a task.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from messaging.clock import Clock, Timer

__all__ = ["PresenceTracker", "Publish"]

Publish = Callable[[int, bool, int], None]  # (user id, online, wall-clock ms): must not wait


@dataclass(slots=True)
class _User:
    devices: set[str] = field(default_factory=set)
    published_online: bool = False
    last_published_at: float = -math.inf
    offline_since: float = 0.0
    timer: Timer | None = None


class PresenceTracker:
    """Aggregates devices into users and decides when a user's presence is published."""

    def __init__(
        self,
        *,
        grace_s: float,
        publish: Publish,
        is_connected: Callable[[str], bool],
        clock: Clock,
    ) -> None:
        self._grace = grace_s
        self._publish = publish
        self._is_connected = is_connected
        self._clock = clock
        self._users: dict[int, _User] = {}

    def online(self, user_ids: Collection[int]) -> set[int]:
        """Users among ``user_ids`` with a connected device now."""
        return {user_id for user_id in user_ids if (user := self._users.get(user_id)) and user.devices}

    def device_connected(self, user_id: int, device_id: str) -> None:
        """A device of ``user_id`` completed CONNECT."""
        user = self._users.setdefault(user_id, _User())
        user.devices.add(device_id)
        self._settle(user_id)

    def device_disconnected(self, user_id: int, device_id: str) -> None:
        """A connection of ``device_id`` ended (unless a newer one of the same device took over)."""
        user = self._users.get(user_id)
        if user is None or self._is_connected(device_id):
            return
        user.devices.discard(device_id)
        if not user.devices:
            user.offline_since = self._clock.monotonic()
        self._settle(user_id)

    def _settle(self, user_id: int) -> None:
        user = self._users[user_id]
        if user.timer is not None:
            user.timer.cancel()
            user.timer = None
        online = bool(user.devices)
        now = self._clock.monotonic()
        if online == user.published_online:
            if not online:
                self._forget_later(user_id, user, now)
            return
        due = user.last_published_at + self._grace
        if not online:
            due = max(due, user.offline_since + self._grace)
        if due > now:
            user.timer = self._clock.call_later(due - now, self._settle, user_id)
            return
        user.published_online = online
        user.last_published_at = now
        self._publish(user_id, online, self._clock.wall_ms())
        if not online:
            self._forget_later(user_id, user, now)

    def _forget_later(self, user_id: int, user: _User, now: float) -> None:
        """Drop an offline user's state once its last publish is a grace period old.

        Until then the state must stay: it holds the time of that publish, and a reconnect
        within the grace period may publish ``online`` only once the period is over.
        """
        remaining = user.last_published_at + self._grace - now
        if remaining <= 0:
            del self._users[user_id]
        else:
            user.timer = self._clock.call_later(remaining, self._settle, user_id)

    def close(self) -> None:
        """Cancel pending decisions (at shutdown)."""
        for user in self._users.values():
            if user.timer is not None:
                user.timer.cancel()
