"""Real NATS servers with JetStream for tests (started by ``launcher/local_servers.py``).

``start_nats(root, size=3)`` is the launcher's, which ``make cluster`` uses too: a cluster of
routed servers, each of which can be stopped, killed (``SIGKILL``) and started again. What only
tests need is here: waiting for JetStream to take an operation again after a server died.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.errors import Error as NatsError

from launcher.local_servers import NatsCluster, NatsServer, start_nats

T = TypeVar("T")

__all__ = ["NatsCluster", "NatsServer", "start_nats", "when_jetstream_answers"]

_RETRY_PAUSE_S = 0.05


async def when_jetstream_answers(operation: Callable[[], Awaitable[T]]) -> T:
    """The result of ``operation`` once JetStream takes it, after a server of the cluster died.

    A stream whose leader died is unavailable until its replicas elect another (seconds on 2.9),
    and nothing announces the election to a client: the operation itself is the probe, retried
    on "no response from stream" and time-outs with a short pause between attempts. Bound the
    wait with ``asyncio.timeout``.
    """
    while True:
        try:
            return await operation()
        except (NatsError, TimeoutError):
            await asyncio.sleep(_RETRY_PAUSE_S)
