"""``BatchedLookup`` driven by callbacks: answers made in place, and every way a load can end.

A CONNECT's signed-in check asks ``BatchedLookup.ask`` for "is the owner of this device this
user?": the answer is made where the batch settles, without a second future per caller. The
batches run without a task, so each way a load ends (an answer, an exception raised at once by
a closed reader, a failure later, a cancellation) must settle its callers and let the keys
asked meanwhile go on to the next batch.
"""

from __future__ import annotations

import asyncio
import functools
import operator
from collections.abc import Collection

import pytest

from api.store.batched import BatchedLookup


async def test_an_answer_is_made_where_the_batch_settles_and_a_quitter_takes_nothing_away() -> None:
    loads: list[list[str]] = []

    async def load(keys: Collection[str]) -> dict[str, int]:
        loads.append(sorted(keys))
        return {"dev-a": 7, "dev-b": 8}

    lookup: BatchedLookup[str, int] = BatchedLookup(load)
    quitter = lookup.ask("dev-a", functools.partial(operator.eq, 7))
    asked = [
        lookup.ask("dev-a", functools.partial(operator.eq, 7)),
        lookup.ask("dev-b", functools.partial(operator.eq, 7)),
        lookup.ask("dev-c", functools.partial(operator.eq, 7)),
        lookup.get("dev-b"),
    ]
    quitter.cancel()
    assert await asyncio.gather(*asked) == [True, False, False, 8]
    assert quitter.cancelled()
    assert loads == [["dev-a", "dev-b", "dev-c"]]


async def test_keys_asked_during_a_load_are_the_next_batch() -> None:
    loads: list[list[str]] = []
    loading, release = asyncio.Event(), asyncio.Event()

    async def load(keys: Collection[str]) -> dict[str, int]:
        loads.append(sorted(keys))
        loading.set()
        await release.wait()
        return dict.fromkeys(keys, 1)

    lookup: BatchedLookup[str, int] = BatchedLookup(load)
    first = lookup.get("a")
    await loading.wait()  # the first batch is loading
    later = [lookup.get("b"), lookup.get("c")]
    release.set()
    assert await asyncio.gather(first, *later) == [1, 1, 1]
    assert loads == [["a"], ["b", "c"]]


async def test_a_load_raising_at_once_fails_its_batch_and_the_next_batch_still_loads() -> None:
    def load(keys: Collection[str]) -> asyncio.Future[dict[str, int]]:
        if "bad" in keys:
            raise RuntimeError("the reader is closed")
        answer: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
        answer.set_result(dict.fromkeys(keys, 2))
        return answer

    lookup: BatchedLookup[str, int] = BatchedLookup(load)
    with pytest.raises(RuntimeError, match="closed"):
        await lookup.get("bad")
    assert await lookup.get("good") == 2


async def test_a_cancelled_load_cancels_its_callers_only() -> None:
    pending: list[asyncio.Future[dict[str, int]]] = []
    loading = asyncio.Event()

    def load(keys: Collection[str]) -> asyncio.Future[dict[str, int]]:
        answer: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
        if "doomed" in keys:
            pending.append(answer)
            loading.set()
        else:
            answer.set_result(dict.fromkeys(keys, 3))
        return answer

    lookup: BatchedLookup[str, int] = BatchedLookup(load)
    doomed = lookup.get("doomed")
    await loading.wait()
    pending[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert await lookup.get("fine") == 3
