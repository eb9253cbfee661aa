"""Snowflake IDs: 64-bit, unique across nodes, sortable by time, monotonic per node.

Layout (most significant first): 41 bits of milliseconds since ``EPOCH_MS``, 10 bits of
node id, 12 bits of sequence. A generator never goes backwards: if the wall clock steps
back, it keeps counting from the last millisecond it issued, borrowing the next one when
a millisecond's 4,096 sequence numbers are spent.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["EPOCH_MS", "MAX_NODE_ID", "SnowflakeGenerator", "parse_id", "snowflake_time_ms"]

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
NODE_BITS = 10
SEQUENCE_BITS = 12
MAX_NODE_ID = (1 << NODE_BITS) - 1
_MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


_MAX_ID_DIGITS = 19  # a positive signed 64-bit integer


def parse_id(text: str) -> int | None:
    """The id written as ``text`` (decimal ASCII, as in JSON and topics), or ``None``."""
    if not text.isascii() or not text.isdigit() or len(text) > _MAX_ID_DIGITS or text[0] == "0":
        return None
    value = int(text)
    return value if value < 1 << 63 else None


def snowflake_time_ms(snowflake: int) -> int:
    """Unix milliseconds at which ``snowflake`` was issued."""
    return (snowflake >> (NODE_BITS + SEQUENCE_BITS)) + EPOCH_MS


class SnowflakeGenerator:
    """Issues Snowflakes for one node; not thread-safe (one per event loop)."""

    __slots__ = ("_clock_ms", "_last_ms", "_node_id", "_sequence")

    def __init__(self, node_id: int, clock_ms: Callable[[], int] = _wall_clock_ms) -> None:
        if not 0 <= node_id <= MAX_NODE_ID:
            raise ValueError(f"node id must be within 0..{MAX_NODE_ID}, got {node_id}")
        self._node_id = node_id
        self._clock_ms = clock_ms
        self._last_ms = -1
        self._sequence = 0

    def next_id(self) -> int:
        """Return the next ID, strictly greater than every ID this generator issued before."""
        now = self._clock_ms() - EPOCH_MS
        if now > self._last_ms:
            self._last_ms = now
            self._sequence = 0
        elif self._sequence < _MAX_SEQUENCE:
            self._sequence += 1
        else:
            self._last_ms += 1
            self._sequence = 0
        return (
            (self._last_ms << (NODE_BITS + SEQUENCE_BITS)) | (self._node_id << SEQUENCE_BITS) | self._sequence
        )
