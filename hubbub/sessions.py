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

``SignedInDevices`` keeps the store's positive answers, so a device reconnecting is not a query
each time. It is only correct where every ``DeviceEnded`` reaches it (``forget_on_end`` in front
of the node's ``LiveConnections``): on one node with the API in the same process, and on a
cluster's broker nodes. A broker whose API runs apart without NATS never hears of an ended device
and must ask the store every time. What a node misses while its NATS connection is down (a device
ended meanwhile) is repaired on the reconnect: it forgets every entry and asks the store again
about each device connected to it (``cluster/session_recheck.py``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import orjson

from hubbub.futures import passed_failure

__all__ = ["DeviceEnded", "DeviceSessions", "EndReason", "LiveConnections", "SignedInDevices"]

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

    def is_signed_in(self, user_id: int, device_id: str) -> Awaitable[bool]:
        """Whether ``device_id`` is a device of ``user_id`` that has not been ended.

        A coroutine, or a future: the broker waits for a future with a callback on it, where a
        coroutine costs it a task per CONNECT (``SqlDeviceSessions`` and ``SignedInDevices``
        answer with futures).
        """
        ...


class LiveConnections(Protocol):
    """The broker side of ending a device: close its live MQTT connections."""

    async def end_device(self, ended: DeviceEnded) -> None:
        """Close every connection whose client id is ``ended.device_id`` (on every node)."""
        ...


class SignedInDevices:
    """``DeviceSessions`` remembering the devices found signed in, forgotten when one is ended.

    Bounded twice: at most ``capacity`` devices (the least recently connected go first), each
    for ``ttl_s`` at most. Only a yes is kept: a device not signed in is asked again (it may be
    an unknown id, and a no costs nothing to the devices that are). A device ended while its
    question was on the way to the store is refused, whatever the store answered: the API
    removes the device before it tells the brokers, so an answer read before the removal
    could otherwise let it in once more.
    """

    def __init__(
        self,
        store: DeviceSessions,
        *,
        capacity: int = 200_000,
        ttl_s: float = 300.0,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._capacity = capacity
        self._ttl_s = ttl_s
        self._clock = clock_s
        self._known: OrderedDict[str, tuple[int, float]] = OrderedDict()  # device -> (user, expires at)
        self._asking: dict[str, int] = {}  # device -> questions to the store on the way
        self._ended_while_asking: set[str] = set()
        self._generation = 0  # forget_all's count: an answer to a question asked before it is not kept

    def remembers(self, user_id: int, device_id: str) -> bool:
        """Whether ``device_id`` is remembered as a signed-in device of ``user_id`` (asks no one).

        The broker asks this first: a yes lets a reconnecting device in within the turn of
        the event loop that read its CONNECT; a no means ``is_signed_in`` must be awaited.
        """
        known = self._known.get(device_id)
        if known is None:
            return False
        if known[0] == user_id and known[1] > self._clock():
            self._known.move_to_end(device_id)
            return True
        del self._known[device_id]
        return False

    def is_signed_in(self, user_id: int, device_id: str) -> asyncio.Future[bool]:
        """Whether ``device_id`` is a signed-in device of ``user_id``: remembered, or asked (a future)."""
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self.remembers(user_id, device_id):
            answer.set_result(True)
            return answer
        self._asking[device_id] = self._asking.get(device_id, 0) + 1
        asked = asyncio.ensure_future(self._store.is_signed_in(user_id, device_id))
        asked.add_done_callback(
            functools.partial(self._answered, user_id, device_id, self._generation, answer)
        )
        return answer

    def _answered(
        self,
        user_id: int,
        device_id: str,
        generation: int,
        answer: asyncio.Future[bool],
        asked: asyncio.Future[bool],
    ) -> None:
        """The store answered (or failed): believed unless the device was ended meanwhile.

        A yes is remembered only if nothing was forgotten since the question left: after a
        ``forget_all`` it may predate an end this node never heard of.
        """
        ended = device_id in self._ended_while_asking
        left = self._asking.pop(device_id) - 1
        if left:
            self._asking[device_id] = left
        else:
            self._ended_while_asking.discard(device_id)
        if passed_failure(answer, asked):
            return
        signed_in = asked.result() and not ended
        if signed_in and generation == self._generation:
            self._known[device_id] = (user_id, self._clock() + self._ttl_s)
            if len(self._known) > self._capacity:
                self._known.popitem(last=False)
        if not answer.done():  # unless the caller gave up
            answer.set_result(signed_in)

    def forget(self, device_id: str) -> None:
        """``device_id`` was ended: refuse it from now on, including a question on the way."""
        self._known.pop(device_id, None)
        if device_id in self._asking:
            self._ended_while_asking.add(device_id)

    def forget_on_end(self, live: LiveConnections) -> LiveConnections:
        """``live``, forgetting each ended device here first (so its next CONNECT asks the store)."""
        return _ForgetOnEnd(self, live)

    def forget_all(self) -> None:
        """Forget every remembered device: an end may have been missed (a cluster's NATS gap).

        Answers to questions already on the way are passed on but not remembered either.
        """
        self._known.clear()
        self._generation += 1


class _ForgetOnEnd:
    """``LiveConnections`` that forgets the device in ``SignedInDevices`` before closing it."""

    def __init__(self, devices: SignedInDevices, live: LiveConnections) -> None:
        self._devices = devices
        self._live = live

    async def end_device(self, ended: DeviceEnded) -> None:
        """Forget ``ended.device_id``'s sign-in, then close its connections."""
        self._devices.forget(ended.device_id)
        await self._live.end_device(ended)
