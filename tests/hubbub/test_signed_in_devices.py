"""``SignedInDevices``: the broker remembers signed-in devices, and never a device that was ended.

The store here is a double whose answers the test releases one at a time, so the race of an
ended device with its own question to the store is played out in order, not by timing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hubbub.sessions import DeviceEnded, DeviceSessions, LiveConnections, SignedInDevices


@dataclass
class GatedStore:
    """``DeviceSessions`` over a set of signed-in (user, device) pairs; counts and can hold questions."""

    signed_in: set[tuple[int, str]] = field(default_factory=set)
    asked: list[str] = field(default_factory=list)
    gate: asyncio.Event | None = None  # set: questions wait for it
    waiting: asyncio.Event = field(default_factory=asyncio.Event)

    async def is_signed_in(self, user_id: int, device_id: str) -> bool:
        self.asked.append(device_id)
        answer = (user_id, device_id) in self.signed_in  # read before the wait, like a query in flight
        if self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        return answer


@dataclass
class ClosedDevices:
    """``LiveConnections`` recording what it was asked to close."""

    ended: list[str] = field(default_factory=list)

    async def end_device(self, ended: DeviceEnded) -> None:
        self.ended.append(ended.device_id)


def _conforms(store: GatedStore, live: ClosedDevices, devices: SignedInDevices) -> None:
    """The doubles and the wrapper implement the Protocols: mypy checks this assignment."""
    _: tuple[DeviceSessions, LiveConnections, DeviceSessions] = (store, live, devices)


async def test_a_signed_in_device_is_asked_once_then_remembered() -> None:
    store = GatedStore({(7, "phone")})
    devices = SignedInDevices(store)
    assert await devices.is_signed_in(7, "phone")
    assert await devices.is_signed_in(7, "phone")
    assert store.asked == ["phone"]


async def test_only_a_yes_is_remembered_and_only_for_its_user() -> None:
    store = GatedStore({(7, "phone")})
    devices = SignedInDevices(store)
    assert not await devices.is_signed_in(7, "unknown")
    assert not await devices.is_signed_in(7, "unknown")
    assert await devices.is_signed_in(7, "phone")
    assert not await devices.is_signed_in(8, "phone")  # another user's token for this client id
    assert store.asked == ["unknown", "unknown", "phone", "phone"]


async def test_an_ended_device_is_forgotten_and_refused_by_the_store() -> None:
    store = GatedStore({(7, "phone"), (7, "laptop")})
    devices = SignedInDevices(store)
    live = ClosedDevices()
    ending = devices.forget_on_end(live)
    assert await devices.is_signed_in(7, "phone")
    assert await devices.is_signed_in(7, "laptop")
    store.signed_in.discard((7, "phone"))  # the API removes it, then tells the brokers
    await ending.end_device(DeviceEnded(7, "phone", "logout"))
    assert live.ended == ["phone"]
    assert not await devices.is_signed_in(7, "phone")
    assert await devices.is_signed_in(7, "laptop")  # the other device is still remembered
    assert store.asked == ["phone", "laptop", "phone"]


async def test_a_device_ended_while_its_question_is_on_the_way_is_refused() -> None:
    store = GatedStore({(7, "phone")}, gate=asyncio.Event())
    devices = SignedInDevices(store)
    question = asyncio.ensure_future(devices.is_signed_in(7, "phone"))
    await store.waiting.wait()  # the store read "signed in" and the answer is on its way
    await devices.forget_on_end(ClosedDevices()).end_device(DeviceEnded(7, "phone", "ended"))
    assert store.gate is not None
    store.gate.set()
    assert not await question  # the stale yes is not believed
    store.gate = None
    store.signed_in.discard((7, "phone"))
    assert not await devices.is_signed_in(7, "phone")  # nor remembered


async def test_entries_expire_and_the_least_recently_connected_go_first() -> None:
    now = [0.0]
    store = GatedStore({(1, "a"), (2, "b"), (3, "c")})
    devices = SignedInDevices(store, capacity=2, ttl_s=10, clock_s=lambda: now[0])
    for user_id, device_id in ((1, "a"), (2, "b"), (1, "a"), (3, "c")):  # "b" is the oldest when "c" comes
        assert await devices.is_signed_in(user_id, device_id)
    assert store.asked == ["a", "b", "c"]
    assert await devices.is_signed_in(2, "b")
    assert store.asked == ["a", "b", "c", "b"]
    now[0] = 11.0
    assert await devices.is_signed_in(3, "c")
    assert store.asked == ["a", "b", "c", "b", "c"]


async def test_an_answer_on_its_way_across_a_forget_all_is_passed_on_but_not_remembered() -> None:
    """A NATS gap: the question left before the node forgot everything, its yes may predate an end."""
    store = GatedStore({(7, "phone")}, gate=asyncio.Event())
    devices = SignedInDevices(store)
    question = asyncio.ensure_future(devices.is_signed_in(7, "phone"))
    await store.waiting.wait()  # the store read "signed in" before the node's reconnect
    devices.forget_all()
    assert store.gate is not None
    store.gate.set()
    assert await question  # what the store said, to the CONNECT that asked
    store.gate = None
    assert not devices.remembers(7, "phone")  # but the node's recheck must ask again
    assert await devices.is_signed_in(7, "phone")
    assert devices.remembers(7, "phone")  # an answer to a question asked after it is kept
    assert store.asked == ["phone", "phone"]
