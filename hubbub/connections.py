"""Where the MQTT server and the transport-free messaging core meet: one Protocol each way.

The MQTT server (``broker_plugins``) holds the device connections; the messaging core
(``messaging``) decides what to say to them. Neither imports the other:

- ``Inboxes`` is the one thing a deliverer needs: an event to a user's inbox (all devices,
  one device, or all but one). The fan-out of committed messages takes only this, so the
  same code delivers in one process (the MQTT server) and in a cluster (a NATS publisher to
  the broker nodes holding the user's devices, ``cluster/inbox.py``).
- ``DeviceConnections`` is what the core asks of the MQTT server: ``Inboxes``, plus set a
  user's retained presence, whether a device is connected, drop a device.
- ``DeviceEvents`` is what the MQTT server reports to the core: a device connected or
  disconnected, published a message or a typing notice, subscribed to its inbox, or
  subscribed to a presence topic holding no retained state yet.

On the hot path these calls are plain method calls: ``send`` returns ``None`` when the
message was handled at once, and the delivery methods never wait. ``device_connected`` may
return something to wait for (a cluster node subscribes to the user's inbox on NATS): the
MQTT server then sends the CONNACK once it is done, so that a device that subscribes to its
inbox and then catches up from history cannot miss what was committed in between.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

__all__ = ["DeviceConnections", "DeviceEvents", "Inboxes"]


class Inboxes(Protocol):
    """Where events for users' devices go: the MQTT server, or the cluster's broker nodes."""

    def to_inbox(
        self, user_id: int, payload: bytes, *, only_device: str | None = None, skip_device: str | None = None
    ) -> int:
        """Deliver ``payload`` to ``user/{user_id}/inbox``: only to ``only_device``, never to ``skip_device``.

        Returns how many connected devices got it now, in this process (devices with a
        persistent session that are away get it on their return, and are not counted; an
        event handed to other nodes counts 0 here). Never waits.
        """
        ...


class DeviceConnections(Inboxes, Protocol):
    """The MQTT server, as the messaging core sees it."""

    def set_presence(self, user_id: int, payload: bytes) -> None:
        """Retain ``payload`` on ``presence/{user_id}`` and deliver it to that topic's subscribers."""
        ...

    def is_connected(self, device_id: str) -> bool:
        """Whether ``device_id`` has a live connection now."""
        ...

    def drop(self, device_id: str) -> None:
        """Close ``device_id``'s connection, if it has one (it may connect again)."""
        ...


class DeviceEvents(Protocol):
    """The messaging core, as the MQTT server sees it. ``user_id`` is always the authenticated one."""

    def device_connected(self, user_id: int, device_id: str) -> Awaitable[None] | None:
        """A device completed its CONNECT (authenticated; not yet acknowledged).

        ``None`` when handled at once (one node); otherwise the CONNACK waits until the
        awaitable is done (a cluster node's subscription to the user's inbox is in place).
        Either way ``device_disconnected`` follows once the connection ends.
        """
        ...

    def device_disconnected(self, user_id: int, device_id: str) -> None:
        """A device's connection ended, for whatever reason (DISCONNECT, keepalive, socket)."""
        ...

    def send(
        self, user_id: int, device_id: str, conversation_id: int, payload: bytes
    ) -> Awaitable[None] | None:
        """A device published ``payload`` to ``conv/{conversation_id}/send``.

        ``None`` when handled at once; otherwise the publish is acknowledged once the
        awaitable is done (backpressure from the persister's queue, a membership lookup).
        """
        ...

    def typing(self, user_id: int, device_id: str, conversation_id: int) -> Awaitable[None] | None:
        """A device published to ``conv/{conversation_id}/typing``."""
        ...

    def inbox_subscribed(self, user_id: int, device_id: str) -> None:
        """A device subscribed to its inbox (it may have a notice waiting)."""
        ...

    async def presence_snapshot(self, user_id: int) -> bytes:
        """The presence payload of ``user_id`` for a topic that holds none yet (after a restart)."""
        ...
