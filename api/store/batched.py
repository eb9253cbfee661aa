"""Coalescing point lookups: many concurrent ``get(key)`` calls answered by one query per batch.

Why: a reconnect storm asks the account store the same kind of question (is this device signed
in? when was this user last active?) for thousands of keys at once. One query per key costs a
pooled connection, a transaction and a round trip each (on SQLite, a hop to its thread and
back): at a few hundred per second that, not the broker, bounds how fast devices come back.
Here the keys asked while a query runs wait for the next one, which asks for all of them with
``IN (...)``; a quiet broker still gets its answer at once (a batch of one, started on the
next turn of the event loop).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Hashable, Mapping
from typing import Generic, TypeVar

__all__ = ["BatchedLookup"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

logger = logging.getLogger(__name__)

_MAX_BATCH = 500  # bound parameters per query: well under SQLite's 32,766 and PostgreSQL's 65,535


class BatchedLookup(Generic[K, V]):
    """``get(key)`` through ``load(keys) -> {key: value}`` (a key it leaves out reads as ``None``).

    One load runs at a time; callers asking for the same key share its answer. A failed load
    fails the calls of its batch (with the load's exception) and nothing else.
    """

    def __init__(
        self, load: Callable[[Collection[K]], Awaitable[Mapping[K, V]]], *, max_batch: int = _MAX_BATCH
    ) -> None:
        self._load = load
        self._max_batch = max_batch
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}  # key -> its callers' futures
        self._loader: asyncio.Task[None] | None = None

    def get(self, key: K) -> asyncio.Future[V | None]:
        """The value of ``key``, from the next batch.

        Each caller gets a future of its own: one that gives up (a CONNECT timing out)
        cancels only its own, never its batch-mates' answer, with no ``shield`` per call.
        """
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.append(future)
            return future
        self._waiting[key] = [future]
        if self._loader is None or self._loader.done():
            self._loader = asyncio.create_task(self._run(), name="batched-lookup")
        return future

    async def _run(self) -> None:
        await asyncio.sleep(0)  # let the callers of this turn of the loop join the first batch
        while self._waiting:
            keys = list(self._waiting)[: self._max_batch]
            batch = {key: self._waiting.pop(key) for key in keys}
            try:
                found = await self._load(keys)
            except Exception as exc:  # noqa: BLE001 - handed to the callers that asked
                logger.warning("a batched lookup of %d keys failed: %r", len(keys), exc)
                for futures in batch.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                continue
            for key, futures in batch.items():
                value = found.get(key)
                for future in futures:
                    if not future.done():
                        future.set_result(value)
