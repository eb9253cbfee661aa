"""JetStream streams created idempotently with the settings the code relies on.

Every process that writes or reads a stream ensures it at start-up: the first creates it, the
others find it. A stream that exists with a different retention or subjects cannot be used (the
code's guarantees rest on them, and NATS cannot change a retention in place): that is a
``ClusterConfigError`` naming the difference, never a silent mismatch. Other settings (max age,
duplicate window, replicas) are taken as they are: an operator may have tuned them.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import StreamConfig, StreamInfo
from nats.js.errors import NotFoundError

from cluster.connection import ClusterConfigError

__all__ = ["ensure_stream"]

logger = logging.getLogger(__name__)


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> StreamInfo:
    """The stream of ``config.name``, created from ``config`` if absent; an existing one must match it."""
    name = config.name or ""
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        info = await js.add_stream(config)
        logger.info("created JetStream stream %s (replicas %s)", name, config.num_replicas)
        return info
    existing = info.config
    if existing.retention != config.retention or sorted(existing.subjects or []) != sorted(
        config.subjects or []
    ):
        raise ClusterConfigError(
            f"JetStream stream {name} has retention {existing.retention} on {existing.subjects}; this "
            f"node needs {config.retention} on {config.subjects}: delete or edit the stream"
        )
    return info
