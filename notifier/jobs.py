"""What the notifier is asked to do: push one committed message to some recipients.

The caller decides *who* (members with no online device, not muted, not the sender) and knows
each one's unread count and tokens (the account store's ``PushRecipient``, passed on as it is);
the notifier decides *how* (fitting, coalescing, retries, providers). Keeping that split here
means the notifier needs no account store of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from hubbub.envelope import CommittedMessage
from hubbub.stores import PushRecipient

__all__ = ["PushJob"]


@dataclass(frozen=True, slots=True)
class PushJob:
    """This committed message should be pushed to these recipients.

    ``sender_name`` is the sender's display name; ``conversation_title`` the group's title, or
    ``None`` for a one-to-one conversation.
    """

    message: CommittedMessage
    sender_name: str
    recipients: tuple[PushRecipient, ...]
    conversation_title: str | None = None
