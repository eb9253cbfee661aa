"""Time, injected: the core asks a ``Clock`` instead of the wall clock or the event loop.

Rate limits, the membership cache and the presence grace period all depend on time; a
``Clock`` lets unit tests step it by hand (``tests/messaging/clock.py``) and run in
milliseconds. ``LoopClock`` is the real one: the monotonic clock, the event loop's timers,
and the wall clock for timestamps shown to users.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "LoopClock", "Timer"]


class Timer(Protocol):
    """A scheduled call that may be cancelled."""

    def cancel(self) -> None:
        """Do not call it."""
        ...


class Clock(Protocol):
    """Monotonic seconds, wall-clock milliseconds, and timers."""

    def monotonic(self) -> float:
        """Seconds on a clock that never steps back (for intervals and deadlines)."""
        ...

    def wall_ms(self) -> int:
        """Unix time in milliseconds (for times users see)."""
        ...

    def call_later(self, delay_s: float, callback: Callable[[int], None], argument: int) -> Timer:
        """Call ``callback(argument)`` in ``delay_s`` seconds."""
        ...


class LoopClock:
    """The running event loop's clock and timers; the system's wall clock."""

    def monotonic(self) -> float:
        """``time.monotonic()`` (event-loop timers take delays, so they agree with it)."""
        return time.monotonic()

    def wall_ms(self) -> int:
        """Unix time in milliseconds."""
        return time.time_ns() // 1_000_000

    def call_later(self, delay_s: float, callback: Callable[[int], None], argument: int) -> Timer:
        """An event-loop timer."""
        return asyncio.get_running_loop().call_later(delay_s, callback, argument)
