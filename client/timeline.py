"""One conversation as a device holds it: messages merged by ``seq``, gaps told from silence.

``seq`` is dense per conversation, so holding 41 and 43 means 42 is missing (not unsent).
The timeline keeps the contiguous prefix it holds (``held``) and anything that arrived
early, and says which range to fetch to close a gap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Timeline"]


@dataclass
class Timeline:
    """Messages of one conversation by seq; ``held`` = every seq up to it is here."""

    held: int = 0
    messages: dict[int, Mapping[str, Any]] = field(default_factory=dict)

    def add(self, message: Mapping[str, Any]) -> bool:
        """Merge a message (event or history row); False if it was already held."""
        seq = int(message["seq"])
        if seq in self.messages or seq <= 0:
            return False
        self.messages[seq] = message
        while self.held + 1 in self.messages:
            self.held += 1
        return True

    @property
    def gap(self) -> tuple[int, int] | None:
        """``(after, up_to)`` when a later message arrived before earlier ones, else None."""
        if not self.messages:
            return None
        newest = max(self.messages)
        return None if newest == self.held else (self.held, newest)

    def ordered(self) -> list[Mapping[str, Any]]:
        """Every message held, in seq order."""
        return [self.messages[seq] for seq in sorted(self.messages)]
