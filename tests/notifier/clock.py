"""A clock the test moves by hand: ``sleep`` parks on it until ``advance`` passes its deadline."""

from __future__ import annotations

import asyncio


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if seconds <= 0:  # like a real zero sleep: back after one turn of the loop, not at once
            loop.call_soon(future.set_result, None)
            await future
            return
        entry = (self.now + seconds, future)
        self._sleepers.append(entry)
        try:
            await future
        finally:
            self._sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, future in list(self._sleepers):
            if deadline <= self.now and not future.done():
                future.set_result(None)

    def pending(self) -> list[float]:
        """Seconds left on each parked sleeper, soonest first."""
        return sorted(deadline - self.now for deadline, future in self._sleepers if not future.done())
