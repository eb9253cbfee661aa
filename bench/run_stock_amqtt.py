"""Run stock amqtt (the pinned 0.12.1) on 127.0.0.1, as a baseline for the project's own broker.

Why a separate script: the broker must run in its own OS process so that the load generator's
CPU use does not slow it down, and so it can be killed cleanly. The configuration is amqtt's
default minus the $SYS plugin (its periodic publishes would add noise): event and packet
logger plugins plus anonymous authentication, one TCP listener on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from amqtt.broker import Broker


def broker_config(port: int) -> dict[str, object]:
    """Return amqtt's default configuration, minus $SYS, bound to loopback on ``port``."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}", "max_connections": 0}},
        "plugins": {
            "amqtt.plugins.logging_amqtt.EventLoggerPlugin": {},
            "amqtt.plugins.logging_amqtt.PacketLoggerPlugin": {},
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }


async def serve(port: int, max_seconds: float) -> None:
    """Serve until SIGTERM/SIGINT or ``max_seconds``, so a forgotten broker still stops by itself."""
    broker = Broker(broker_config(port))
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), timeout=max_seconds)
    except TimeoutError:
        logging.getLogger(__name__).warning("stopping after %.0f s without a stop signal", max_seconds)
    try:
        await asyncio.wait_for(broker.shutdown(), timeout=10)
    except TimeoutError:
        logging.getLogger(__name__).warning("broker shutdown timed out")


def main() -> None:
    """Parse ``--port`` / ``--max-seconds`` and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(args.port, args.max_seconds))


if __name__ == "__main__":
    main()
