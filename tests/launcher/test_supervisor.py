"""The supervisor: loops that fail, end or stall are started again, and /healthz says so meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette

from launcher.health import Health, health_routes
from launcher.supervisor import LoopStatus, Supervisor

BOUND_S = 30.0
NEVER_S = 3600.0
GONE = "RuntimeError: consumer gone"  # a check interval or back-off that never elapses during a test


class Loop:
    """A loop whose starts are counted and whose behaviour per start the test chooses."""

    def __init__(self, behaviour: Callable[[int], None] | None = None) -> None:
        self.starts = 0
        self.progress = 0
        self.started = asyncio.Condition()
        self.behaviour = behaviour

    async def run(self) -> None:
        self.starts += 1
        async with self.started:
            self.started.notify_all()
        if self.behaviour is not None:
            self.behaviour(self.starts)  # may raise
        await asyncio.Event().wait()

    async def wait_starts(self, count: int) -> None:
        async with self.started:
            await self.started.wait_for(lambda: self.starts >= count)


@asynccontextmanager
async def running(supervisor: Supervisor) -> AsyncIterator[Supervisor]:
    task = asyncio.create_task(supervisor.run())
    try:
        yield supervisor
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def fail_first(start: int) -> None:
    if start == 1:
        raise RuntimeError("lost the subscription")


async def test_a_loop_that_fails_is_started_again_and_its_failure_kept() -> None:
    loop = Loop(fail_first)
    supervisor = Supervisor(backoff_initial_s=0, check_interval_s=NEVER_S)
    supervisor.add("intake-7", loop.run)
    async with asyncio.timeout(BOUND_S), running(supervisor):
        await loop.wait_starts(2)
        await supervisor.wait_for(lambda loops: loops["intake-7"].running)
        (status,) = supervisor.statuses
        assert status.restarts == 1
        assert status.last_error == "RuntimeError: lost the subscription"
        assert supervisor.problems() == []


async def test_a_loop_that_returns_is_started_again() -> None:
    def end_first(start: int) -> None:
        if start == 1:
            raise asyncio.CancelledError  # as a consumer whose subscription was closed under it

    returning = Loop()
    ending = Loop(end_first)

    async def returns_once() -> None:
        if returning.starts == 0:
            returning.starts += 1
            return
        await returning.run()

    supervisor = Supervisor(backoff_initial_s=0, check_interval_s=NEVER_S)
    supervisor.add("returns", returns_once)
    supervisor.add("cancelled-inside", ending.run)
    async with asyncio.timeout(BOUND_S), running(supervisor):
        await returning.wait_starts(2)
        await ending.wait_starts(2)
        statuses = {status.name: status for status in supervisor.statuses}
        assert statuses["returns"].last_error == "ended"
        assert statuses["cancelled-inside"].last_error == "cancelled"


async def test_a_loop_without_progress_whose_probe_fails_is_stalled_then_restarted() -> None:
    loop = Loop()
    probe_ok = False

    async def probe() -> bool:
        return probe_ok

    supervisor = Supervisor(backoff_initial_s=0, check_interval_s=NEVER_S, restart_stalled_after=2)
    supervisor.add("inbox", loop.run, progress=lambda: loop.progress, probe=probe)
    async with asyncio.timeout(BOUND_S), running(supervisor):
        await loop.wait_starts(1)
        loop.progress += 1  # it made progress since it started: healthy without asking the probe
        await supervisor.check()
        assert supervisor.problems() == []
        await supervisor.check()  # no progress since, and the probe fails: stalled
        assert supervisor.problems() == ["loop inbox is stalled: no progress and its probe failed"]
        probe_ok = True  # idle but fine (nothing pending): healthy again
        await supervisor.check()
        assert supervisor.problems() == []
        probe_ok = False
        await supervisor.check()
        await supervisor.check()  # the second failed check in a row: cancelled and started again
        await loop.wait_starts(2)
        await supervisor.wait_for(lambda loops: loops["inbox"].running)
        assert supervisor.statuses[0].last_error == "stalled"
        assert supervisor.problems() == []


async def test_healthz_is_503_with_the_reason_while_a_loop_is_dead() -> None:
    def always_fail(start: int) -> None:
        del start
        raise RuntimeError("consumer gone")

    healthy_loop, dead_loop = Loop(), Loop(always_fail)
    supervisor = Supervisor(backoff_initial_s=NEVER_S, backoff_max_s=NEVER_S, check_interval_s=NEVER_S)
    supervisor.add("healthy", healthy_loop.run)
    health = Health()
    health.watch_supervisor(supervisor)

    async def no_metrics() -> bytes:
        return b""

    app = Starlette(routes=health_routes(health, no_metrics))
    async with (
        asyncio.timeout(BOUND_S),
        running(supervisor),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://node") as client,
    ):
        await healthy_loop.wait_starts(1)
        response = await client.get("/healthz")
        assert (response.status_code, response.json()) == (200, {"status": "ok"})
        supervisor.add("committed-3", dead_loop.run)  # added while running: started at once

        def dead(loops: dict[str, LoopStatus]) -> bool:
            return loops["committed-3"].restarts == 1 and not loops["committed-3"].running

        await supervisor.wait_for(dead)
        response = await client.get("/healthz")
        assert response.status_code == 503
        assert response.json() == {
            "status": "unhealthy",
            "problems": [f"loop committed-3 is not running, restarting (last error: {GONE})"],
        }


async def test_a_watched_loop_that_stops_is_reported_not_restarted() -> None:
    alive = True
    supervisor = Supervisor(check_interval_s=NEVER_S)
    supervisor.watch("presence-mirror", running=lambda: alive)
    async with asyncio.timeout(BOUND_S), running(supervisor):
        assert supervisor.problems() == []
        alive = False
        assert supervisor.problems() == ["loop presence-mirror has stopped"]
        await supervisor.check()
        assert supervisor.statuses[0].restarts == 0
