"""Messages sent but not yet acknowledged: resent with the same cmid until the ``ack`` comes.

The cmid makes a resend idempotent: the server answers a resend of a stored message with
its original ``ack`` and never stores it twice.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass

__all__ = ["Outbox", "Pending"]


@dataclass(frozen=True)
class Pending:
    """A message waiting for its ack."""

    conversation_id: str
    cmid: str
    text: str


class Outbox:
    """Thread-safe, in send order (paho calls back from its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Pending] = {}
        self.emptied = threading.Event()
        self.emptied.set()

    def add(self, conversation_id: str, text: str, cmid: str | None = None) -> Pending:
        """Queue a new message (a fresh UUID cmid unless one is given)."""
        pending = Pending(conversation_id, cmid or str(uuid.uuid4()), text)
        with self._lock:
            self._pending[pending.cmid] = pending
            self.emptied.clear()
        return pending

    def settle(self, cmid: str) -> Pending | None:
        """The ack (or a final error) for ``cmid`` arrived: forget it."""
        with self._lock:
            pending = self._pending.pop(cmid, None)
            if not self._pending:
                self.emptied.set()
        return pending

    def unsettled(self) -> list[Pending]:
        """Everything still waiting, oldest first."""
        with self._lock:
            return list(self._pending.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)
