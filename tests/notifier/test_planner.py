"""The planner: committed batches to push jobs, each batch settled once its pushes are over.

Read from a feed that records settling (the in-process feed's batches settle silently), with a
real dispatcher pushing to the local webhook receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field

import pytest

from hubbub.envelope import CommitResult, CommittedMessage
from hubbub.push_feed import CommittedBatch
from hubbub.stores import PushAudience, PushRecipient
from notifier.dispatcher import Dispatcher
from notifier.planner import PushPlanner
from notifier.providers.webhook import WebhookProvider
from tests.notifier.http_services import WebhookReceiver
from tests.notifier.pushes import hook, message, next_call, within

MEMBERS = frozenset({7, 1, 2})  # the sender (7) and two others


@dataclass(eq=False)
class Batch:
    results: tuple[CommitResult, ...]
    feed: Feed
    shard: int = 0
    retried: list[float] = field(default_factory=list)

    def settle(self) -> None:
        self.feed.settled.put_nowait(self)

    def retry(self, delay_s: float) -> None:
        self.retried.append(delay_s)
        self.feed.retried.put_nowait(self)  # the test hands it back when it wants


@dataclass
class Feed:
    batches: asyncio.Queue[Batch] = field(default_factory=asyncio.Queue)
    settled: asyncio.Queue[Batch] = field(default_factory=asyncio.Queue)
    retried: asyncio.Queue[Batch] = field(default_factory=asyncio.Queue)

    def committed(self, *messages: CommittedMessage, duplicate: bool = False) -> Batch:
        batch = Batch(tuple(CommitResult(m, duplicate, "device-7") for m in messages), self)
        self.batches.put_nowait(batch)
        return batch

    async def next_batch(self) -> CommittedBatch:
        return await self.batches.get()


class Directory:
    """Everyone offline has one webhook token; the audience of ``failing`` raises once (store down)."""

    def __init__(self) -> None:
        self.failing: int | None = None

    async def audience(self, message: CommittedMessage, user_ids: Collection[int]) -> PushAudience:
        if message.message_id == self.failing:
            self.failing = None
            raise ConnectionError(f"account store down (message {message.message_id})")
        recipients = tuple(PushRecipient(user, 1, (hook(f"u{user}"),)) for user in sorted(user_ids))
        return PushAudience("Ann", None, recipients)

    async def remove_token(self, token_id: str) -> int | None:
        raise AssertionError(token_id)


@dataclass
class World:
    feed: Feed
    directory: Directory
    dispatcher: Dispatcher
    online: set[int]


@pytest.fixture
async def world(make: Callable[..., Dispatcher], webhook: WebhookProvider) -> AsyncIterator[World]:
    feed, directory, online = Feed(), Directory(), {2}
    dispatcher = make(webhook)

    async def members(conversation_id: int) -> frozenset[int]:
        del conversation_id
        return MEMBERS

    def who_is_online(users: Collection[int]) -> set[int]:
        return online & set(users)

    planner = PushPlanner(directory, dispatcher, members=members, online=who_is_online, feed=feed)
    async with dispatcher.running():
        task = asyncio.create_task(planner.run())
        yield World(feed, directory, dispatcher, online)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def bodies(receiver: WebhookReceiver, count: int) -> Sequence[str]:
    return [(await next_call(receiver)).body["token"]["value"] for _ in range(count)]


async def test_offline_members_but_the_sender_are_pushed_and_the_batch_settled(
    world: World, webhook_receiver: WebhookReceiver
) -> None:
    batch = world.feed.committed(message(1), message(2))
    assert await within(world.feed.settled.get()) is batch
    assert await bodies(webhook_receiver, 2) == ["u1", "u1"]  # 2 is online, 7 sent it
    assert webhook_receiver.calls.empty()


async def test_duplicates_are_not_pushed_and_their_batch_settles_at_once(
    world: World, webhook_receiver: WebhookReceiver
) -> None:
    batch = world.feed.committed(message(1), duplicate=True)
    assert await within(world.feed.settled.get()) is batch
    assert webhook_receiver.calls.empty()


async def test_a_batch_whose_planning_fails_is_handed_back_and_pushed_once(
    world: World, webhook_receiver: WebhookReceiver
) -> None:
    world.online.clear()
    world.directory.failing = 3  # after message 2 was planned and pushed
    failing = world.feed.committed(message(2), message(3))
    assert await within(world.feed.retried.get()) is failing
    assert failing.retried == [5.0]
    assert sorted(await bodies(webhook_receiver, 2)) == ["u1", "u2"]
    await within(world.dispatcher.wait_idle())

    world.feed.batches.put_nowait(failing)  # redelivered
    assert await within(world.feed.settled.get()) is failing
    assert sorted(await bodies(webhook_receiver, 2)) == ["u1", "u2"]
    await within(world.dispatcher.wait_idle())
    assert webhook_receiver.calls.empty()
    assert world.dispatcher.metrics.value("duplicates") == 2  # message 2, pushed before
    assert world.feed.settled.empty()  # settled once, after the redelivery only
