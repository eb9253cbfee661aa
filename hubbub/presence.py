"""Presence as it crosses nodes: who reports, who decides, who reads, and the records between them.

A user is online while any of its devices is connected, anywhere (DESIGN.md "Presence", "Scaling
out"). Three roles, each a Protocol here so one node (``hubbub up``, in-process) and a cluster
(NATS, ``cluster/``) share them:

- ``PresenceReports``: what a broker node's messaging core reports — a device connected or
  disconnected on this node.
- ``PresenceReader``: what readers ask — who is online now (``PresenceView``, synchronous, for
  the API and the push planner), and the payload for a ``presence/{uid}`` topic that holds no
  retained state yet (after a restart, or on a node that never retained it).
- ``PresenceDecider``: the single writer's logic for one user shard (one node in-process): the
  device set of each user keyed by (node, device), the grace period, at most one change per
  grace period; plus what only a cluster needs — a node died (all its devices leave at once),
  a resync (replace one node's device set) and a seed (what the bucket said before takeover).
  Transport-free: ``messaging.presence.PresenceTracker`` implements it; the cluster's writer
  is handed a factory of it.

The records: ``DeviceChange`` (a node's device connected/disconnected, to the shard's writer),
``NodeDevices`` (a node's answer to a resync), ``PresenceChange`` (a decision, carried as the
retained ``presence/{uid}`` payload itself, ``hubbub.events.presence_payload``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

import orjson

from hubbub.events import presence_payload
from hubbub.stores import PresenceView

__all__ = [
    "LOCAL_NODE",
    "DeviceChange",
    "NodeDevices",
    "PresenceChange",
    "PresenceDecider",
    "PresenceReader",
    "PresenceReports",
    "PresenceService",
    "Publish",
]

LOCAL_NODE = "local"
"""The node of every device when there is one node (``hubbub up``)."""

Publish = Callable[[int, bool, int], None]
"""A presence decision: (user id, online, wall-clock ms). Must not wait."""


class PresenceReports(Protocol):
    """What a broker node's messaging core reports (only devices connected to this node)."""

    def device_connected(self, user_id: int, device_id: str) -> None:
        """A device of ``user_id`` completed CONNECT here."""
        ...

    def device_disconnected(self, user_id: int, device_id: str) -> None:
        """A connection of ``device_id`` here ended (ignored if a newer one of it took over)."""
        ...


class PresenceReader(PresenceView, Protocol):
    """What readers ask: who is online now, and a payload for a topic with no retained state."""

    async def snapshot(self, user_id: int) -> bytes:
        """The current ``presence/{user_id}`` payload (offline, with the stored last activity, if unknown)."""
        ...


class PresenceService(PresenceReports, PresenceReader, Protocol):
    """Presence as a broker node's messaging core uses it: report, read, and stop."""

    async def close(self) -> None:
        """Stop deciding or reporting; store what is pending (at shutdown). Idempotent."""
        ...


class PresenceDecider(Protocol):
    """The single writer of a user shard: device sets by (node, device), the grace rules."""

    def online(self, user_ids: Collection[int]) -> set[int]:
        """Users among ``user_ids`` with a connected device now (on any node)."""
        ...

    def device_connected(self, user_id: int, device_id: str, node: str = LOCAL_NODE) -> None:
        """``device_id`` of ``user_id`` connected on ``node``."""
        ...

    def device_disconnected(self, user_id: int, device_id: str, node: str = LOCAL_NODE) -> None:
        """``device_id`` of ``user_id`` is no longer connected on ``node``."""
        ...

    def node_died(self, node: str) -> None:
        """Every device on ``node`` disconnected now; the grace period applies as usual."""
        ...

    def resync(self, node: str, devices: Iterable[tuple[int, str]]) -> None:
        """``node`` holds exactly ``devices`` (user id, device id) of this shard now."""
        ...

    def seed(self, user_id: int, online: bool, at_ms: int | None) -> None:
        """What was last published for ``user_id`` (before this writer): changes are made from it."""
        ...

    def nodes(self) -> set[str]:
        """The nodes holding at least one device known here."""
        ...

    def close(self) -> None:
        """Cancel pending decisions."""
        ...


class _Record:
    """A JSON object being read as a record: each field checked, any fault a ``ValueError`` naming it."""

    def __init__(self, data: bytes, what: str) -> None:
        self.what = what
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not a {what}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ValueError(f"not a {what}: not an object")  # noqa: TRY004 - bad input, one error type
        self.raw: dict[str, object] = raw

    def fault(self, why: str) -> ValueError:
        return ValueError(f"not a {self.what}: {why}")

    def field(self, name: str) -> object:
        if name not in self.raw:
            raise self.fault(f"no {name}")
        return self.raw[name]

    def text(self, name: str) -> str:
        value = self.field(name)
        if not isinstance(value, str) or not value:
            raise self.fault(f"{name} must be a non-empty string")
        return value

    def count(self, name: str) -> int:
        value = self.field(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.fault(f"{name} must be a non-negative integer")
        return value

    def flag(self, name: str) -> bool:
        value = self.field(name)
        if not isinstance(value, bool):
            raise self.fault(f"{name} must be a boolean")
        return value


@dataclass(frozen=True, slots=True)
class DeviceChange:
    """A device connected or disconnected on ``node``, sent to the writer of the user's shard.

    ``boot`` names the node's process incarnation and ``seq`` counts the node's changes for the
    shard (1, 2, ...): the writer drops a change its last resync of the node already covered,
    and asks the node again when it sees a gap (a change lost on the wire).
    """

    node: str
    boot: str
    seq: int
    user_id: int
    device_id: str
    connected: bool

    def to_json(self) -> bytes:
        """The wire form."""
        return orjson.dumps(
            {
                "node": self.node,
                "boot": self.boot,
                "seq": self.seq,
                "user_id": self.user_id,
                "device_id": self.device_id,
                "connected": self.connected,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> DeviceChange:
        """The record of ``data``; ``ValueError`` if it is not one."""
        record = _Record(data, "device change")
        return cls(
            record.text("node"),
            record.text("boot"),
            record.count("seq"),
            record.count("user_id"),
            record.text("device_id"),
            record.flag("connected"),
        )


@dataclass(frozen=True, slots=True)
class NodeDevices:
    """A node's answer to a resync: every device of the shard it holds, as of its change ``seq``."""

    node: str
    boot: str
    seq: int
    devices: tuple[tuple[int, str], ...]

    def to_json(self) -> bytes:
        """The wire form."""
        devices = [list(device) for device in self.devices]
        return orjson.dumps({"node": self.node, "boot": self.boot, "seq": self.seq, "devices": devices})

    @classmethod
    def from_json(cls, data: bytes) -> NodeDevices:
        """The record of ``data``; ``ValueError`` if it is not one."""
        record = _Record(data, "resync answer")
        listed = record.field("devices")
        if not isinstance(listed, list):
            raise record.fault("devices must be a list")
        devices: list[tuple[int, str]] = []
        for item in listed:
            match item:
                case [int() as user_id, str() as device_id] if user_id >= 0 and device_id:
                    devices.append((user_id, device_id))
                case _:
                    raise record.fault("each device is [user id, device id]")
        return cls(record.text("node"), record.text("boot"), record.count("seq"), tuple(devices))


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """A published decision: ``user_id`` is online or not, as of ``at_ms`` (its last activity)."""

    user_id: int
    online: bool
    at_ms: int | None

    def to_payload(self) -> bytes:
        """The retained ``presence/{uid}`` payload (what crosses nodes, and what devices get)."""
        return presence_payload(self.user_id, online=self.online, last_active_ms=self.at_ms)

    @classmethod
    def from_payload(cls, data: bytes) -> PresenceChange:
        """The decision a presence payload carries; ``ValueError`` if it is not one."""
        record = _Record(data, "presence payload")
        user_id = record.text("user_id")
        status = record.field("status")
        at = record.field("last_active_at")
        if not user_id.isdigit() or status not in {"online", "offline"}:
            raise record.fault("a decimal user_id and a status online or offline")
        if at is not None and not isinstance(at, str):
            raise record.fault("last_active_at must be a time or null")
        at_ms = None if at is None else round(dt.datetime.fromisoformat(at).timestamp() * 1000)
        return cls(int(user_id), status == "online", at_ms)
