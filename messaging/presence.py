"""Presence: a user is online while any of its devices is connected, on any node.

The MQTT server reports every device connection and disconnection — clean DISCONNECT,
keepalive expiry or a dropped socket alike. A user whose last device left is published
``offline`` only after a grace period (a train in a tunnel): a reconnect within it
publishes nothing at all. And whatever the churn, each user's state is published at most
once per grace period, so a mass reconnect after a network blip costs one publish per user
that really changed, not a storm.

``PresenceTracker`` is that decision, transport-free (``hubbub.presence.PresenceDecider``):
devices are keyed by (node, device), so the same object is the single writer of one user
shard in a cluster — where a node can die (its devices all leave at that moment, then the
grace period runs as usual), be asked again what it holds (``resync``), and the writer starts
from what its predecessor published (``seed``). ``LocalPresence`` is one node's presence
(``hubbub up``): the tracker over this node's devices, publishing to the MQTT server's
retained ``presence/{uid}`` and recording the last activity.

State per user is kept while the user is online, while a decision is pending, and for a
grace period after its last publish (which bounds the next one). Time comes from the
injected ``Clock``; publishing is a plain call (``Publish``), never a task.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable

from hubbub.connections import DeviceConnections
from hubbub.events import presence_payload
from hubbub.presence import LOCAL_NODE, Publish
from hubbub.stores import Directory
from messaging.clock import Clock, Timer
from messaging.last_active import LastActiveWriter

__all__ = ["LocalPresence", "PresenceTracker"]

_SHUTDOWN_WRITE_S = 10.0
_Device = tuple[str, str]  # node, device id


class _User:
    """One user's presence state, kept per online user (so per device, nearly always one each).

    The devices are a tuple, not a set: a user has one to a few devices, and an empty set
    costs 216 bytes where a tuple of one costs 48 (a third of this object's size per device).
    """

    __slots__ = ("devices", "last_published_at", "offline_since", "published_online", "timer")

    def __init__(self) -> None:
        self.devices: tuple[_Device, ...] = ()
        self.published_online = False
        self.last_published_at = -math.inf
        self.offline_since = 0.0
        self.timer: Timer | None = None


class PresenceTracker:
    """Aggregates devices (by node) into users and decides when a user's presence is published."""

    def __init__(self, *, grace_s: float, publish: Publish, clock: Clock) -> None:
        self._grace = grace_s
        self._publish = publish
        self._clock = clock
        self._users: dict[int, _User] = {}
        self._by_node: dict[str, set[tuple[int, str]]] = {}

    def online(self, user_ids: Collection[int]) -> set[int]:
        """Users among ``user_ids`` with a connected device now."""
        return {user_id for user_id in user_ids if (user := self._users.get(user_id)) and user.devices}

    def device_connected(self, user_id: int, device_id: str, node: str = LOCAL_NODE) -> None:
        """A device of ``user_id`` completed CONNECT on ``node``."""
        self._add(user_id, device_id, node)
        self._settle(user_id)

    def device_disconnected(self, user_id: int, device_id: str, node: str = LOCAL_NODE) -> None:
        """``device_id`` is no longer connected on ``node``."""
        if self._remove(user_id, device_id, node):
            self._settle(user_id)

    def node_died(self, node: str) -> None:
        """Every device on ``node`` left now: its users go offline after the grace period."""
        held = set(self._by_node.get(node, ()))
        for user_id, device_id in held:
            self._remove(user_id, device_id, node)
        self._settle_each(user_id for user_id, _ in held)

    def resync(self, node: str, devices: Iterable[tuple[int, str]]) -> None:
        """``node`` holds exactly ``devices`` of this shard: apply the difference as (dis)connects."""
        now_held = set(devices)
        before = self._by_node.get(node, set())
        gone, came = before - now_held, now_held - before
        for user_id, device_id in gone:
            self._remove(user_id, device_id, node)
        for user_id, device_id in came:
            self._add(user_id, device_id, node)
        self._settle_each(user_id for user_id, _ in gone | came)

    def seed(self, user_id: int, online: bool, at_ms: int | None) -> None:
        """``user_id`` was last published ``online`` at ``at_ms`` (wall clock), by a previous writer.

        The period since then is read from this node's wall clock, bounded to one grace period
        (a clock ahead of ours counts as "just now": never two changes within a period).
        """
        now = self._clock.monotonic()
        user = self._user(user_id)
        user.published_online = online
        age_s = self._grace if at_ms is None else (self._clock.wall_ms() - at_ms) / 1000
        user.last_published_at = now - min(max(age_s, 0.0), self._grace)
        if not user.devices:
            user.offline_since = now
        self._settle(user_id)

    def nodes(self) -> set[str]:
        """The nodes holding at least one known device."""
        return {node for node, held in self._by_node.items() if held}

    def close(self) -> None:
        """Cancel pending decisions (at shutdown, or when the shard moves away)."""
        for user in self._users.values():
            if user.timer is not None:
                user.timer.cancel()
                user.timer = None

    def _user(self, user_id: int) -> _User:
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = _User()
        return user

    def _add(self, user_id: int, device_id: str, node: str) -> None:
        user = self._user(user_id)
        device = (node, device_id)
        if device not in user.devices:
            user.devices += (device,)
        held = self._by_node.get(node)
        if held is None:
            held = self._by_node[node] = set()
        held.add((user_id, device_id))

    def _remove(self, user_id: int, device_id: str, node: str) -> bool:
        user = self._users.get(user_id)
        if user is None or (node, device_id) not in user.devices:
            return False
        user.devices = tuple(device for device in user.devices if device != (node, device_id))
        held = self._by_node[node]
        held.discard((user_id, device_id))
        if not held:
            del self._by_node[node]
        if not user.devices:
            user.offline_since = self._clock.monotonic()
        return True

    def _settle_each(self, user_ids: Iterable[int]) -> None:
        for user_id in set(user_ids):
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


class LocalPresence:
    """One node's presence (``hubbub up``, no cluster): a ``hubbub.presence.PresenceService``.

    The tracker decides over this node's devices; each decision is retained on the MQTT
    server's ``presence/{uid}`` and recorded as the user's last activity. Once closed, the
    caller reports nothing more (the messaging core stops forwarding at shutdown).
    """

    def __init__(
        self, *, grace_s: float, connections: DeviceConnections, directory: Directory, clock: Clock
    ) -> None:
        self._connections = connections
        self._directory = directory
        self._last_active = LastActiveWriter(directory)
        self._tracker = PresenceTracker(grace_s=grace_s, publish=self._publish, clock=clock)

    def device_connected(self, user_id: int, device_id: str) -> None:
        """A device of ``user_id`` completed CONNECT."""
        self._tracker.device_connected(user_id, device_id)

    def device_disconnected(self, user_id: int, device_id: str) -> None:
        """A connection of ``device_id`` ended (unless a newer one of the same device took over)."""
        if not self._connections.is_connected(device_id):
            self._tracker.device_disconnected(user_id, device_id)

    def online(self, user_ids: Collection[int]) -> set[int]:
        """Users among ``user_ids`` with a connected device on this node."""
        return self._tracker.online(user_ids)

    async def snapshot(self, user_id: int) -> bytes:
        """Online here or not, and the stored last activity."""
        online = bool(self._tracker.online([user_id]))
        last = await self._directory.last_active(user_id)
        return presence_payload(user_id, online=online, last_active_ms=last)

    async def close(self) -> None:
        """Stop deciding and store the last activity still pending."""
        self._tracker.close()
        await self._last_active.close(_SHUTDOWN_WRITE_S)

    def _publish(self, user_id: int, online: bool, at_ms: int) -> None:
        self._connections.set_presence(
            user_id, presence_payload(user_id, online=online, last_active_ms=at_ms)
        )
        self._last_active.record(user_id, at_ms)
