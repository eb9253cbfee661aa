"""Slow set-ups started in a thread as the session begins, handed to the first test that asks.

Why: most of the suite's wall time is spent waiting on other processes, with a core to spare.
A set-up that takes minutes of CPU on its own (a clean clone's ``make run``: the lock file, the
mypyc build, the web bundle) or a long start (Cassandra's JVM) would otherwise run alone when its
first test comes; started with the session, it overlaps the tests before it. What the test then
gets is exactly what it would have started itself, and a set-up that failed raises in that test,
never at session start. Started only when a collected test needs it (``tests/conftest.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

__all__ = ["EarlyStart"]

T = TypeVar("T")


class EarlyStart(Generic[T]):
    """``start()`` running in a daemon thread from now on; ``result()`` waits for what it returned."""

    def __init__(self, name: str, start: Callable[[], T]) -> None:
        self.name = name
        self._future: Future[T] = Future()
        self._taken = False
        threading.Thread(target=self._run, args=(start,), name=f"early-{name}", daemon=True).start()

    def _run(self, start: Callable[[], T]) -> None:
        self._future.set_running_or_notify_cancel()
        try:
            self._future.set_result(start())
        except BaseException as exc:  # noqa: BLE001 - handed to the test that asks, raised there
            self._future.set_exception(exc)

    def result(self, timeout: float) -> T:
        """What ``start`` returned (raised if it raised); ``TimeoutError`` if it is not done in time."""
        self._taken = True
        return self._future.result(timeout)

    def discard(self, stop: Callable[[T], object], timeout: float) -> None:
        """At session end: ``stop`` what was started but never taken by a test (a run cut short).

        Waits up to ``timeout`` for a start still under way: its processes must not outlive the session.
        """
        if self._taken:
            return
        try:
            started = self._future.result(timeout)
        except BaseException:  # noqa: BLE001 - it failed to start: nothing was left running
            return
        stop(started)
