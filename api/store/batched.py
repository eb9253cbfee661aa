"""Coalescing point lookups: many concurrent ``get(key)`` calls answered by one query per batch.

Why: a reconnect storm asks the account store the same kind of question (is this device signed
in? when was this user last active?) for thousands of keys at once. One query per key costs a
pooled connection, a transaction and a round trip each (on SQLite, a hop to its thread and
back): at a few hundred per second that, not the broker, bounds how fast devices come back.
Here the keys asked while a query runs wait for the next one, which asks for all of them with
``IN (...)``; a quiet broker still gets its answer at once (a batch of one, started on the
next turn of the event loop).

The batches are driven by callbacks, not a task: the first key asked in a quiet spell schedules
the batch (``call_soon``), each load's end settles its callers and starts the next batch. A
CONNECT pays for one future and the one callback that settles it; a load that answers with a
future (``api/store/sessions.py``: its SQLite reader) costs no task either.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections.abc import Awaitable, Callable, Collection, Hashable, Mapping
from typing import Any, Generic, TypeVar

__all__ = ["BatchedLookup"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
R = TypeVar("R")

logger = logging.getLogger(__name__)

_MAX_BATCH = 500  # bound parameters per query: well under SQLite's 32,766 and PostgreSQL's 65,535

# A caller: its future, and what makes its answer of the value found (``None``: not found).
_Caller = tuple["asyncio.Future[Any]", Callable[[Any], Any]]


def _same(value: R) -> R:
    return value


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
        self._waiting: dict[K, list[_Caller]] = {}  # key -> its callers
        self._busy = False  # a batch is scheduled or loading

    def get(self, key: K) -> asyncio.Future[V | None]:
        """The value of ``key``, from the next batch.

        Each caller gets a future of its own: one that gives up (a CONNECT timing out)
        cancels only its own, never its batch-mates' answer, with no ``shield`` per call.
        """
        return self.ask(key, _same)

    def ask(self, key: K, answer: Callable[[V | None], R]) -> asyncio.Future[R]:
        """``answer`` of the value of ``key`` (``None`` if not found), from the next batch.

        What ``get`` does, with the caller's answer made where the value arrives: no second
        future and callback per caller to map it (a CONNECT's "is it this user's device?").
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        waiting = self._waiting.get(key)
        if waiting is None:
            self._waiting[key] = [(future, answer)]
        else:
            waiting.append((future, answer))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._next)  # the callers of this turn of the loop join the first batch
        return future

    def _next(self) -> None:
        """Load the next batch of waiting keys, or go quiet if none is waiting."""
        if not self._waiting:
            self._busy = False
            return
        keys = list(itertools.islice(self._waiting, self._max_batch))
        batch = {key: self._waiting.pop(key) for key in keys}
        try:
            loading = asyncio.ensure_future(self._load(keys))
        except Exception as exc:  # noqa: BLE001 - handed to the callers that asked
            self._failed(batch, exc)
            asyncio.get_running_loop().call_soon(self._next)
            return
        loading.add_done_callback(functools.partial(self._loaded, batch))

    def _loaded(self, batch: dict[K, list[_Caller]], loading: asyncio.Future[Mapping[K, V]]) -> None:
        """A load ended: settle its callers, then load what was asked meanwhile."""
        if loading.cancelled():
            self._failed(batch, asyncio.CancelledError())
        elif (exc := loading.exception()) is not None:
            self._failed(batch, exc)
        else:
            found = loading.result()
            for key, callers in batch.items():
                value = found.get(key)
                for future, answer in callers:
                    if not future.done():
                        future.set_result(answer(value))
        self._next()

    @staticmethod
    def _failed(batch: Mapping[K, list[_Caller]], exc: BaseException) -> None:
        if not isinstance(exc, asyncio.CancelledError):
            logger.warning("a batched lookup of %d keys failed: %r", len(batch), exc)
        for callers in batch.values():
            for future, _ in callers:
                if not future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
