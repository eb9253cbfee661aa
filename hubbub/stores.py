"""The interfaces components meet at.

Implementations live in the components; the launcher passes them in (the broker never
imports the API's database, nor the API the persister's).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hubbub.envelope import AcceptedMessage, CommitResult, CommittedMessage, SendRequest

__all__ = ["Directory", "InboxPublisher", "MessagePage", "MessageStore", "MessageSubmitter"]


@dataclass(frozen=True, slots=True)
class MessagePage:
    """Part of a conversation's history in ascending ``seq``; ``has_more`` in the paging direction."""

    messages: list[CommittedMessage]
    has_more: bool


class MessageStore(Protocol):
    """History: written only by the persister (one writer per conversation), read by the API.

    Every backend passes the contract suite in ``tests/persister/test_message_store_contract.py``.
    """

    async def commit(self, batch: Sequence[AcceptedMessage]) -> list[CommitResult]:
        """Store ``batch`` atomically, in order, returning results in batch order.

        At most one message per (conversation, sender, cmid); new ones get the next dense
        ``seq`` of their conversation.
        """
        ...

    async def page(
        self,
        conversation_id: int,
        *,
        limit: int,
        before: int | None = None,
        after: int | None = None,
        around: int | None = None,
    ) -> MessagePage:
        """Up to ``limit`` messages before/after/around a ``seq`` (the newest when none is given)."""
        ...

    async def latest_seqs(self, conversation_ids: Collection[int]) -> dict[int, int]:
        """The highest ``seq`` of each conversation that has messages."""
        ...

    async def last_messages(self, conversation_ids: Collection[int]) -> dict[int, CommittedMessage]:
        """The newest message of each conversation that has one."""
        ...

    async def count_after(self, conversation_id: int, after_seq: int, exclude_sender: int) -> int:
        """How many messages after ``after_seq`` were sent by someone other than ``exclude_sender``."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class Directory(Protocol):
    """Who is in a conversation: what ingest and fan-out ask of the account store."""

    async def members(self, conversation_id: int) -> frozenset[int] | None:
        """The member user ids, or ``None`` when the conversation does not exist."""
        ...


class InboxPublisher(Protocol):
    """Delivers server events to users' inboxes (all their devices)."""

    async def publish(self, user_ids: Iterable[int], payload: bytes) -> None:
        """Send ``payload`` to ``user/{uid}/inbox`` of each user."""
        ...

    def membership_changed(self, conversation_id: int) -> None:
        """Forget what is cached about ``conversation_id``'s members: it changed."""
        ...


class MessageSubmitter(Protocol):
    """Sends a message through ingest on behalf of a user (REST, bots) and waits for its commit."""

    async def submit(
        self, conversation_id: int, sender_id: int, device_id: str, request: SendRequest
    ) -> CommitResult:
        """The stored message (``duplicate`` if the cmid was stored before); raises ``MessageRejected``."""
        ...
