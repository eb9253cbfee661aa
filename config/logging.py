"""Logging set-up shared by every entry point."""

from __future__ import annotations

import logging

__all__ = ["configure_logging"]

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Send records to stderr at ``level``; amqtt's chatty per-packet loggers stay at WARNING."""
    logging.basicConfig(level=level, format=_FORMAT, force=True)
    if level != "DEBUG":
        for noisy in ("amqtt", "transitions", "websockets"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    # httpx logs every request URL at INFO; push URLs carry device tokens, which are secrets.
    logging.getLogger("httpx").setLevel(logging.WARNING)
