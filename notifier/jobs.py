"""What the notifier is asked to do: push one committed message to some recipients.

The caller decides *who* (members with no online device, not muted, not the sender) and knows
each one's unread count and tokens (the account store's ``PushRecipient``, passed on as it is);
the notifier decides *how* (fitting, coalescing, retries, providers). Keeping that split here
means the notifier needs no account store of its own.

A job may carry an ``Outstanding``: the count of pushes a batch of committed messages still
owes. The dispatcher adds one for each unit of work it takes on for the job (the job itself
while queued, each token's delivery, a burst holding the message) and takes it off when that
unit is over: pushed, skipped as pushed before, given up for good, dropped under overload, or
covered by a later push of the same burst. When nothing is owed the batch is settled (acked),
so a notifier that dies before then has its batch redelivered to the next one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from hubbub.envelope import CommittedMessage
from hubbub.stores import PushRecipient

__all__ = ["Outstanding", "PushJob"]

_logger = logging.getLogger(__name__)


class Outstanding:
    """Work a batch still owes; ``on_settled`` runs once, when the count first drops to zero.

    It starts at one, the caller's own hold while it is still adding work; ``release`` it
    when everything is added.
    """

    __slots__ = ("_count", "_on_settled")

    def __init__(self, on_settled: Callable[[], None]) -> None:
        self._count = 1
        self._on_settled: Callable[[], None] | None = on_settled

    @property
    def settled(self) -> bool:
        """Nothing is owed any more (and ``on_settled`` ran)."""
        return self._on_settled is None

    def add(self) -> None:
        """One more unit of work owed."""
        if self._on_settled is None:
            raise RuntimeError("work added to a settled batch")
        self._count += 1

    def done(self) -> None:
        """One unit of work is over."""
        self._count -= 1
        if self._count == 0 and self._on_settled is not None:
            on_settled, self._on_settled = self._on_settled, None
            try:
                on_settled()
            except Exception:
                _logger.exception("settling a push batch failed")

    release = done
    """The caller's hold is over (an alias of ``done``, for reading)."""


@dataclass(frozen=True, slots=True)
class PushJob:
    """This committed message should be pushed to these recipients.

    ``sender_name`` is the sender's display name; ``conversation_title`` the group's title, or
    ``None`` for a one-to-one conversation; ``outstanding`` the batch this push is owed to.
    """

    message: CommittedMessage
    sender_name: str
    recipients: tuple[PushRecipient, ...]
    conversation_title: str | None = None
    outstanding: Outstanding | None = field(default=None, compare=False, repr=False)

    def add(self) -> None:
        """One more unit of work for this job's batch, if it has one."""
        if self.outstanding is not None:
            self.outstanding.add()

    def done(self) -> None:
        """One unit of work for this job's batch is over."""
        if self.outstanding is not None:
            self.outstanding.done()
