"""What the notifier is asked to do: push one committed message to some recipients.

The caller decides *who* (members with no online device, not muted, not the sender) and knows
each one's unread count and tokens; the notifier decides *how* (fitting, coalescing, retries,
providers). Keeping that split here means the notifier needs no account store of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from hubbub.envelope import CommittedMessage
from notifier.providers.base import PushToken

__all__ = ["PushJob", "Recipient"]


@dataclass(frozen=True, slots=True)
class Recipient:
    """One user to notify: the app badge to show, the tokens to push to.

    ``show_preview`` False (a privacy setting) pushes "New message" instead of the text.
    """

    user_id: int
    badge: int
    tokens: tuple[PushToken, ...]
    show_preview: bool = True


@dataclass(frozen=True, slots=True)
class PushJob:
    """This committed message should be pushed to these recipients.

    ``sender_name`` is the sender's display name; ``conversation_title`` the group's title, or
    ``None`` for a one-to-one conversation.
    """

    message: CommittedMessage
    sender_name: str
    recipients: tuple[Recipient, ...]
    conversation_title: str | None = None
