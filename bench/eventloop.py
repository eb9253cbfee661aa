"""The load generator's event loop: uvloop where it is installed, asyncio's otherwise.

A worker process receives on hundreds of sockets at once; with asyncio's own loop its
per-socket overhead, not the broker, set the rate once subscriptions went past a few
hundred, for Mosquitto as for the project's broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a fresh loop, as ``asyncio.run`` does."""
    try:
        import uvloop  # noqa: PLC0415 - optional: absent on some platforms
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
