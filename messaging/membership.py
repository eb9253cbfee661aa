"""Who is in a conversation, cached: asked on every send, typing notice and fan-out.

Members are cached per conversation for ``ttl_s``; the API reports changes (through the
core's ``membership_changed``) so that a removal takes effect at once. ``cached`` answers
without waiting, which keeps a send to a known conversation free of any coroutine.
"""

from __future__ import annotations

from enum import Enum
from typing import Final, Literal

from hubbub.stores import Directory
from messaging.clock import Clock

__all__ = ["UNKNOWN", "MembershipCache"]

_CACHE_LIMIT = 100_000  # cached conversations per node before pruning


class _Unknown(Enum):
    """Not cached (or expired): ask ``MembershipCache.members``."""

    UNKNOWN = "unknown"


UNKNOWN: Final = _Unknown.UNKNOWN


class MembershipCache:
    """Members per conversation, from the ``Directory``, kept ``ttl_s`` seconds."""

    def __init__(self, directory: Directory, clock: Clock, ttl_s: float) -> None:
        self._directory = directory
        self._clock = clock
        self._ttl_s = ttl_s
        self._members: dict[int, tuple[frozenset[int] | None, float]] = {}

    def cached(self, conversation_id: int, now: float) -> frozenset[int] | Literal[_Unknown.UNKNOWN] | None:
        """The members if cached and fresh at ``now`` (``None``: no such conversation), else ``UNKNOWN``."""
        entry = self._members.get(conversation_id)
        if entry is None or entry[1] <= now:
            return UNKNOWN
        return entry[0]

    async def members(self, conversation_id: int) -> frozenset[int] | None:
        """Members of ``conversation_id`` (cached), ``None`` if it does not exist."""
        now = self._clock.monotonic()
        entry = self._members.get(conversation_id)
        if entry is not None and entry[1] > now:
            return entry[0]
        members = await self._directory.members(conversation_id)
        if len(self._members) >= _CACHE_LIMIT:
            # Bound memory on a long-lived node: forget what has expired (or, failing that, all).
            self._members = {cid: kept for cid, kept in self._members.items() if kept[1] > now}
            if len(self._members) >= _CACHE_LIMIT:
                self._members.clear()
        self._members[conversation_id] = (members, now + self._ttl_s)
        return members

    def forget(self, conversation_id: int) -> None:
        """Drop the cached members of ``conversation_id``: they changed."""
        self._members.pop(conversation_id, None)

    def forget_all(self) -> None:
        """Drop every cached membership: changes may have been missed (a cluster's NATS gap)."""
        self._members.clear()
