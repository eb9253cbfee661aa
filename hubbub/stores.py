"""The interfaces components meet at.

Implementations live in the components; the launcher passes them in (the broker never
imports the API's database, nor the API the persister's).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from hubbub.envelope import AcceptedMessage, CommitResult, CommittedMessage, SendRequest
from hubbub.errors import CommitFailed

__all__ = [
    "CatchUp",
    "Directory",
    "Fence",
    "FencedOut",
    "InboxPublisher",
    "MessagePage",
    "MessageStore",
    "MessageSubmitter",
    "PresenceView",
    "PushAudience",
    "PushDirectory",
    "PushRecipient",
    "PushToken",
]


@dataclass(frozen=True, slots=True)
class MessagePage:
    """Part of a conversation's history in ascending ``seq``; ``has_more`` in the paging direction."""

    messages: list[CommittedMessage]
    has_more: bool


@dataclass(frozen=True, slots=True)
class CatchUp:
    """A conversation's history past a device's cursor: the first messages after it, and the newest seq.

    ``messages`` ascend from the cursor without a gap; the device holds everything once it holds
    ``latest_seq`` (when ``messages`` stop short of it, the rest is still missing).
    """

    latest_seq: int
    messages: list[CommittedMessage]


@dataclass(frozen=True, slots=True)
class Fence:
    """A shard owner's fencing token: ``epoch`` grows each time ``shard`` changes owner.

    In a cluster each conversation shard has one persister at a time, holding a lease whose
    revision is the epoch (DESIGN.md, Scaling out). A lease alone is unsafe (a paused process
    keeps writing after its lease expired), so the store checks the epoch in the write that
    commits: a commit carrying an older epoch than the shard's newest is refused.
    """

    shard: int
    epoch: int


class FencedOut(CommitFailed):
    """A fenced commit was refused: a newer owner (a higher epoch) holds the shard."""


class MessageStore(Protocol):
    """History: written only by the persister (one writer per conversation), read by the API.

    Every backend passes the contract suite in ``tests/persister/test_message_store_contract.py``.
    """

    async def commit(
        self, batch: Sequence[AcceptedMessage], *, fence: Fence | None = None
    ) -> list[CommitResult]:
        """Store ``batch`` atomically, in order, returning results in batch order.

        At most one message per (conversation, sender, cmid); new ones get the next dense
        ``seq`` of their conversation. Calls may overlap (the persister keeps a batch
        committing while it sends the next); batches are committed in the order of the calls.

        ``fence`` (a cluster's persister; every conversation of ``batch`` in ``fence.shard``):
        the first commit with a newer epoch takes the shard over, and a commit whose epoch is
        older than the shard's newest raises ``FencedOut`` with nothing of it visible; the
        same epoch may commit any number of batches. The Cassandra store checks it with one
        lightweight transaction per batch, PostgreSQL with a conditional upsert in the
        commit's transaction. SQLite serves a single node and refuses any fence with
        ``CommitFailed`` (not ``FencedOut``: no other owner exists, the setup is wrong).
        """
        ...

    async def fence(self, fence: Fence) -> None:
        """Take ``fence.shard`` over at ``fence.epoch`` without committing anything.

        A persister that gains a shard calls it before reading the shard's last seqs
        (``latest_seqs``): once it returns, every commit of an older epoch is refused, so none
        can land after that read. (On Cassandra a stale owner's commit that passed its fence
        just before may show in ``latest_seqs`` a moment late, its heads written after its
        commit point; this store's next commit sees it at once, reading the shard serially.)
        Raises ``FencedOut`` if a newer epoch holds the shard (also when this store held
        ``fence`` before and a newer owner has since taken over), and ``CommitFailed`` on
        SQLite, as ``commit`` does.
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

    async def catch_up(self, cursors: Mapping[int, int], *, limit: int) -> dict[int, CatchUp]:
        """For each conversation of ``cursors`` whose history moved past its cursor: what lies after it.

        ``cursors`` maps a conversation id to the last seq a device holds (0: none); the answer
        has the conversations with a message past it, each with its newest seq and up to
        ``limit`` messages after the cursor. What ``latest_seqs`` and a ``page(after=cursor)`` per
        moved conversation would say, in one round trip where the backend allows (SQL: one
        statement): every device of a failed broker node asks it at once.
        """
        ...

    async def last_messages(self, conversation_ids: Collection[int]) -> dict[int, CommittedMessage]:
        """The newest message of each conversation that has one."""
        ...

    async def unread_counts(self, read_up_to: Mapping[int, int], reader_id: int) -> dict[int, int]:
        """Unread messages per conversation: those after the reader's marker, sent by others.

        ``read_up_to`` maps each conversation id to ``reader_id``'s last read seq. All at once,
        so a list of conversations costs one round trip, not one per conversation.
        """
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class Directory(Protocol):
    """What the broker's ACL and the messaging core ask of the account store: members, relations, activity."""

    async def members(self, conversation_id: int) -> frozenset[int] | None:
        """The member user ids, or ``None`` when the conversation does not exist."""
        ...

    async def can_see_presence(self, viewer_id: int, subject_id: int) -> bool:
        """Whether ``viewer_id`` may see ``subject_id``'s presence: self, friends, co-members."""
        ...

    async def last_active(self, user_id: int) -> int | None:
        """When ``user_id`` was last seen (Unix ms), if ever."""
        ...

    async def record_last_active(self, activity: Mapping[int, int]) -> None:
        """Remember when each user of ``activity`` (user id -> Unix ms) was active (survives restarts)."""
        ...


class PresenceView(Protocol):
    """Who is online now, as the messaging core knows it (``messaging.MessagingCore``)."""

    def online(self, user_ids: Collection[int]) -> set[int]:
        """The users among ``user_ids`` with at least one connected device."""
        ...


class InboxPublisher(Protocol):
    """Delivers server events to users' inboxes (all their devices): the messaging core, for the API."""

    async def publish(self, user_ids: Iterable[int], payload: bytes) -> None:
        """Send ``payload`` to ``user/{uid}/inbox`` of each user."""
        ...

    def membership_changed(self, conversation_id: int) -> None:
        """Forget what is cached about ``conversation_id``'s members: it changed."""
        ...


class MessageSubmitter(Protocol):
    """Sends a message through the core's ingest on behalf of a user (REST, bots) and waits for its commit."""

    async def submit(
        self, conversation_id: int, sender_id: int, device_id: str, request: SendRequest
    ) -> CommitResult:
        """The stored message (``duplicate`` if the cmid was stored before).

        Raises ``MessageRejected`` for a refused send, ``Unavailable`` when the store cannot commit now.
        """
        ...


@dataclass(frozen=True, slots=True)
class PushToken:
    """One registered push destination of one device: the account store hands it out, providers push to it.

    ``token_id`` is the device's id. ``value`` is the provider's address: an APNs device token
    (hex), an FCM registration token, a webhook gateway's token, or a Web Push subscription
    (``{"endpoint", "keys": {"p256dh", "auth"}}``). It is a credential of sorts, so it is kept
    out of ``repr`` (and of logs): log ``token_id`` instead.
    """

    token_id: str
    provider: str
    value: str | Mapping[str, Any] = field(repr=False, hash=False, compare=False)

    @classmethod
    def stored(cls, token_id: str, provider: str, value: str) -> PushToken:
        """A token as the account store keeps it (a Web Push subscription is stored as JSON)."""
        return cls(token_id, provider, orjson.loads(value) if provider == "webpush" else value)


@dataclass(frozen=True, slots=True)
class PushRecipient:
    """A user to push to: its app badge (unread count) and its devices' tokens."""

    user_id: int
    badge: int
    tokens: tuple[PushToken, ...]


@dataclass(frozen=True, slots=True)
class PushAudience:
    """Who gets a push for a message, and how it is titled."""

    sender_name: str
    conversation_title: str | None
    recipients: tuple[PushRecipient, ...]


class PushDirectory(Protocol):
    """What the notifier asks of the account store."""

    async def audience(self, message: CommittedMessage, user_ids: Collection[int]) -> PushAudience:
        """Of ``user_ids`` (offline members), those who did not mute the conversation and have tokens."""
        ...

    async def remove_token(self, token_id: str) -> int | None:
        """The push service rejected this token for good: forget it, and say whose device it was."""
        ...
