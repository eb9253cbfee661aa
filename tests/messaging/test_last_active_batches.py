"""The last-active writer: batches per statement, the first at once, nothing lost at shutdown.

The directory here holds each write until the test releases it, so what is batched with what
is decided by the order of events, not by timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from messaging.last_active import LastActiveWriter
from tests.messaging.doubles import FakeDirectory


@dataclass
class HeldDirectory(FakeDirectory):
    """``FakeDirectory`` whose writes wait for ``release``; remembers each batch."""

    batches: list[dict[int, int]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    writing: asyncio.Event = field(default_factory=asyncio.Event)

    async def record_last_active(self, activity: Mapping[int, int]) -> None:
        self.batches.append(dict(activity))
        self.writing.set()
        await self.release.wait()
        await super().record_last_active(activity)


async def test_the_first_record_is_written_at_once_and_the_rest_waits_for_one_batch() -> None:
    directory = HeldDirectory()
    writer = LastActiveWriter(directory, interval_s=3600, max_batch=3)
    writer.record(1, 100)
    await directory.writing.wait()
    assert directory.batches == [{1: 100}]
    for user_id in (2, 3, 2):
        writer.record(user_id, 200 + user_id)
    writer.record(2, 150)  # older than what is pending: kept the newer
    directory.release.set()
    await writer.close(timeout_s=60)
    assert directory.batches == [{1: 100}, {2: 202, 3: 203}]
    assert directory.last_seen == {1: 100, 2: 202, 3: 203}


async def test_full_batches_are_written_without_waiting_for_the_interval() -> None:
    directory = HeldDirectory()
    writer = LastActiveWriter(directory, interval_s=3600, max_batch=2)
    writer.record(1, 100)
    await directory.writing.wait()
    for user_id in (2, 3, 4, 5, 6):
        writer.record(user_id, user_id)
    directory.writing.clear()
    directory.release.set()
    while len(directory.batches) < 3:  # the first, then the two full ones
        directory.writing.clear()
        await directory.writing.wait()
    assert directory.batches == [{1: 100}, {2: 2, 3: 3}, {4: 4, 5: 5}]  # 6 waits for the interval
    await writer.close(timeout_s=60)
    assert directory.batches[3:] == [{6: 6}]
