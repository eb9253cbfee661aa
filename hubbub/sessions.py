"""Signed-in devices: how one is ended, and how the broker hears of it.

A device is signed in while the account store holds it. Logging out, a password change (for
every other device of the account), ending it from the device list, and the reuse of a
rotated-out refresh token (a sign of theft) remove it from the store; a device id is never
issued again, so its tokens are refused from then on by REST (the API checks the store on every
request) and at MQTT CONNECT (the broker asks ``DeviceSessions``), whatever their expiry.

Revocation, not token expiry, ends a live connection: a connection authenticated with a token
that later lapses stays up (cutting every mobile connection each quarter of an hour would cost
reconnects and battery), but a revoked device is disconnected at once. The API commits the
revocation, then hands ``DeviceEnded`` to ``LiveConnections.end_device``. On one node that
closes the device's connections directly; across nodes the same event is published to every
broker node (a plain fan-out subject: it carries no secret, is idempotent, and a node that
misses it still refuses the device at its next CONNECT, because the store no longer holds it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import orjson

__all__ = ["DeviceEnded", "DeviceSessions", "EndReason", "LiveConnections"]

EndReason = Literal["logout", "password_changed", "ended", "refresh_token_reused"]
"""Why a device was ended: it logged out, its password changed elsewhere, the user ended it
from the device list, or one of its rotated-out refresh tokens came back."""


@dataclass(frozen=True, slots=True)
class DeviceEnded:
    """A device that was signed out for good: every connection with its client id must close."""

    user_id: int
    device_id: str
    reason: EndReason

    def to_json(self) -> bytes:
        """The event as it crosses nodes (ids as strings, like every id in Hubbub's JSON)."""
        fields = {"user_id": str(self.user_id), "device_id": self.device_id, "reason": self.reason}
        return orjson.dumps(fields)

    @classmethod
    def from_json(cls, data: bytes) -> DeviceEnded:
        """Parse ``to_json``'s output; ``ValueError`` for anything else."""
        try:
            fields = orjson.loads(data)
            user_id, device_id, reason = fields["user_id"], fields["device_id"], fields["reason"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError("not a device-ended event") from exc
        if not (isinstance(user_id, str) and user_id.isdigit() and isinstance(device_id, str) and device_id):
            raise ValueError("a device-ended event needs a user id and a device id")
        if reason not in get_args(EndReason):
            raise ValueError(f"a device-ended event with an unknown reason {reason!r}")
        return cls(int(user_id), device_id, reason)


class DeviceSessions(Protocol):
    """What the broker asks the account store at CONNECT, after the token itself checked out."""

    async def is_signed_in(self, user_id: int, device_id: str) -> bool:
        """Whether ``device_id`` is a device of ``user_id`` that has not been ended."""
        ...


class LiveConnections(Protocol):
    """The broker side of ending a device: close its live MQTT connections."""

    async def end_device(self, ended: DeviceEnded) -> None:
        """Close every connection whose client id is ``ended.device_id`` (on every node)."""
        ...
