"""Cancelling a task for certain (shared: the cluster's loops and the components' stages).

A cancellation can be lost inside the NATS client: on Python 3.11 ``asyncio.wait_for`` (which
nats-py's requests wait with) returns the reply instead of raising ``CancelledError`` when the
reply and the cancellation land in the same loop turn, and nats-py's flush ends in
``except asyncio.CancelledError: pass``. A loop cancelled in the middle of a KV write then goes
on as if nothing had been asked, and whoever awaits it after ``cancel()`` waits for ever (a
node's heartbeat loop did, under load: its stop never returned). So a task is cancelled again
each time it comes back to an await without having ended.

An ``asyncio.TaskGroup`` cancels its children once: a child that swallowed that cancellation
and then waits on a queue keeps the group, and whoever awaits it, waiting for ever, however
often the group's own task is cancelled again. Stages that may call NATS are stopped with
``stop`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["RECANCEL_S", "cancel", "stop"]

RECANCEL_S = 0.05  # how soon a task that swallowed its cancellation is cancelled again


def cancel(task: asyncio.Task[object]) -> None:
    """Cancel ``task`` now, and again every ``RECANCEL_S`` until it has ended."""
    if task.done():
        return
    task.cancel()
    asyncio.get_running_loop().call_later(RECANCEL_S, cancel, task)


async def stop(task: asyncio.Task[object] | None) -> None:
    """Cancel ``task`` for certain and wait for it to end (an error it ended with is raised)."""
    if task is None:
        return
    cancel(task)
    with contextlib.suppress(asyncio.CancelledError):
        await task
