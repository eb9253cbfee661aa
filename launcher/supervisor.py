"""Keeping a process's consumer loops alive, and saying whether they really are.

In a cluster every process runs long-lived loops: a persister's intake per shard, a notifier's
committed-stream consumer, a broker's inbox subscriptions, the registry heartbeat. A loop that
returns or raises is restarted (with a growing delay, logged with its name), so one bad message
or a NATS hiccup never leaves a shard unserved until someone restarts the process.

The worse failure is the one that raises nothing: a subscription that died silently, a consumer
stuck on a lost pull. So each loop may say how far it got (``progress``: a counter it bumps per
message) and how to check it while idle (``probe``: e.g. "the consumer has nothing pending" or
"a message published to my own subject came back"). ``check()`` (run every ``check_interval_s``)
marks a loop *stalled* when its counter has not moved since the last check and its probe fails.
A stalled loop is reported, and restarted only with ``restart_stalled_after`` (that many stalled
checks in a row): a loop may stand still for a good reason (back-pressure from a slow store or
push provider), and cancelling it mid-batch can cost more than it cures. ``problems()`` is what
``/healthz`` shows: every loop that is not running, or is stalled, with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hubbub import cancelling

__all__ = ["LoopStatus", "Supervisor"]

logger = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[bool]]


@dataclass
class LoopStatus:
    """What the supervisor knows of one loop (read by ``/healthz`` and ``/metrics``)."""

    name: str
    running: bool = False
    restarts: int = 0
    stalled_checks: int = 0
    last_error: str | None = None
    last_progress: int = 0
    restarted_here: bool = True  # False: a component's own loop, only watched

    @property
    def problem(self) -> str | None:
        """Why this loop is unhealthy, or ``None``."""
        if not self.running:
            why = f" (last error: {self.last_error})" if self.last_error else ""
            if not self.restarted_here:
                return f"loop {self.name} has stopped{why}"
            return f"loop {self.name} is not running, restarting{why}"
        if self.stalled_checks:
            return f"loop {self.name} is stalled: no progress and its probe failed"
        return None


@dataclass
class _Loop:
    run: Callable[[], Awaitable[None]] | None  # None: a loop run elsewhere, only watched
    progress: Callable[[], int] | None
    probe: Probe | None
    status: LoopStatus
    restart: asyncio.Event = field(default_factory=asyncio.Event)
    alive: Callable[[], bool] | None = None  # a watched loop's own "is my task running"

    def refresh(self) -> None:
        if self.alive is not None:
            running = self.alive()
            self.status.running = running


class Supervisor:
    """Named loops run in one task group, restarted when they end, fail or stall."""

    def __init__(
        self,
        *,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        check_interval_s: float = 10.0,
        probe_timeout_s: float = 5.0,
        restart_stalled_after: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= backoff_initial_s <= backoff_max_s:
            raise ValueError("backoff_initial_s must be within 0..backoff_max_s")
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.check_interval_s = check_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.restart_stalled_after = restart_stalled_after
        self._monotonic = monotonic
        self._loops: dict[str, _Loop] = {}
        self._group: asyncio.TaskGroup | None = None
        self._changed = asyncio.Condition()

    def add(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        progress: Callable[[], int] | None = None,
        probe: Probe | None = None,
    ) -> None:
        """Supervise ``run`` (a new coroutine per start) under ``name``; started at once if running."""
        if name in self._loops:
            raise ValueError(f"a loop named {name!r} is already supervised")
        loop = _Loop(run, progress, probe, LoopStatus(name))
        self._loops[name] = loop
        if self._group is not None:
            self._group.create_task(self._keep(loop), name=f"supervise-{name}")

    def watch(
        self,
        name: str,
        *,
        running: Callable[[], bool],
        progress: Callable[[], int] | None = None,
        probe: Probe | None = None,
    ) -> None:
        """Check a loop a component runs itself (its own task): reported, not restarted here.

        For components that start their own tasks (subscriptions, outboxes, watchers):
        ``running`` says whether that task is alive; progress and probe work as for ``add``.
        """
        if name in self._loops:
            raise ValueError(f"a loop named {name!r} is already supervised")
        status = LoopStatus(
            name,
            running=running(),
            last_progress=progress() if progress is not None else 0,
            restarted_here=False,
        )
        self._loops[name] = _Loop(None, progress, probe, status, alive=running)

    @property
    def statuses(self) -> list[LoopStatus]:
        """Every loop's status, by name."""
        for loop in self._loops.values():
            loop.refresh()
        return [self._loops[name].status for name in sorted(self._loops)]

    def problems(self) -> list[str]:
        """Why the loops are unhealthy: one line per loop not running or stalled (empty: healthy)."""
        return [problem for status in self.statuses if (problem := status.problem) is not None]

    async def run(self) -> None:
        """Run every loop (and those added later) until cancelled; checks them periodically."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            try:
                for loop in list(self._loops.values()):
                    if loop.run is not None:
                        group.create_task(self._keep(loop), name=f"supervise-{loop.status.name}")
                while True:
                    await asyncio.sleep(self.check_interval_s)
                    await self.check()
            finally:
                self._group = None

    async def check(self) -> None:
        """Look at every loop once: progress since the last check, else its probe."""
        await asyncio.gather(*(self._check(loop) for loop in list(self._loops.values())))
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[dict[str, LoopStatus]], bool]) -> None:
        """Wait until ``predicate`` holds for the loops' statuses (bound it by a timeout)."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: predicate({name: loop.status for name, loop in self._loops.items()})
            )

    def _by_name(self) -> dict[str, LoopStatus]:
        return {status.name: status for status in self.statuses}

    async def _check(self, loop: _Loop) -> None:
        loop.refresh()
        status = loop.status
        if not status.running:
            return
        if loop.progress is not None:
            current = loop.progress()
            if current != status.last_progress:
                status.last_progress = current
                status.stalled_checks = 0
                return
        if loop.probe is None or await self._probe(loop):
            status.stalled_checks = 0
            return
        status.stalled_checks += 1
        logger.warning(
            "loop %s made no progress and its probe failed (%d)", status.name, status.stalled_checks
        )
        limit = self.restart_stalled_after
        if limit is not None and status.stalled_checks >= limit and loop.run is not None:
            loop.restart.set()

    async def _probe(self, loop: _Loop) -> bool:
        assert loop.probe is not None  # noqa: S101 - checked by the caller
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                return await loop.probe()
        except Exception as exc:  # noqa: BLE001 - a failing probe says the loop is unhealthy, no more
            logger.debug("probe of loop %s failed: %r", loop.status.name, exc)
            return False

    async def _keep(self, loop: _Loop) -> None:
        assert loop.run is not None  # noqa: S101 - only started for loops run here
        status = loop.status
        delay = self.backoff_initial_s
        while True:
            started_at = loop.progress() if loop.progress is not None else 0
            loop.restart.clear()
            status.running, status.stalled_checks, status.last_progress = True, 0, started_at
            await self._notify()
            await self._run_once(loop)
            status.running = False
            status.restarts += 1
            await self._notify()
            if loop.progress is not None and loop.progress() != started_at:
                delay = self.backoff_initial_s  # it did work before ending: start again promptly
            logger.warning("restarting loop %s in %.1f s", status.name, delay)
            await asyncio.sleep(delay)
            delay = min(self.backoff_max_s, max(delay * 2, self.backoff_initial_s))

    async def _run_once(self, loop: _Loop) -> None:
        assert loop.run is not None  # noqa: S101 - only started for loops run here
        status = loop.status
        task = asyncio.ensure_future(loop.run())
        stall = asyncio.ensure_future(loop.restart.wait())
        try:
            await asyncio.wait({task, stall}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the supervisor stops: so does the loop
            stall.cancel()
            cancelling.cancel(task)  # for certain: a loop in the NATS client can swallow one cancel
            await asyncio.gather(task, return_exceptions=True)
            raise
        stall.cancel()
        if not task.done():
            cancelling.cancel(task)
            await asyncio.gather(task, return_exceptions=True)
            status.last_error = "stalled"
            logger.error("loop %s stalled: cancelled, to start again", status.name)
        elif task.cancelled():
            status.last_error = "cancelled"
            logger.error("loop %s was cancelled from inside", status.name)
        elif (exc := task.exception()) is not None:
            status.last_error = f"{type(exc).__name__}: {exc}"
            logger.error("loop %s failed", status.name, exc_info=exc)
        else:
            status.last_error = "ended"
            logger.error("loop %s ended", status.name)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
