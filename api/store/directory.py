"""The account store's answers to the broker (``hubbub.stores.Directory``).

The questions asked per connection (may this device see that presence, when was that user
last active, store these users' activity) run as Core statements on a pooled connection: an
ORM session per question cost about as much CPU as the query itself, on every (re)connect.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import bindparam, exists, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from api.db.models import Conversation, Friendship, Member, User

__all__ = ["SqlDirectory", "related_users"]


def related_users(viewer_id: int, candidates: list[int]) -> object:
    """A query of the ``candidates`` whose presence ``viewer_id`` may see (friends, co-members)."""
    mine = aliased(Member)
    theirs = aliased(Member)
    friends = select(Friendship.friend_id).where(
        Friendship.user_id == viewer_id, Friendship.friend_id.in_(candidates)
    )
    co_members = (
        select(theirs.user_id)
        .join(mine, mine.conversation_id == theirs.conversation_id)
        .where(mine.user_id == viewer_id, theirs.user_id.in_(candidates))
    )
    return friends.union(co_members)


class SqlDirectory:
    """Membership, relations and last activity for the broker's ingest, ACL and presence."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        engine = sessions.kw.get("bind")
        if not isinstance(engine, AsyncEngine):
            raise TypeError("SqlDirectory needs sessions bound to an AsyncEngine")
        self._sessions = sessions
        self._engine = engine

    async def members(self, conversation_id: int) -> frozenset[int] | None:
        """Member user ids, or ``None`` if the conversation does not exist."""
        async with self._sessions() as session:
            if await session.get(Conversation, conversation_id) is None:
                return None
            rows = await session.scalars(
                select(Member.user_id).where(Member.conversation_id == conversation_id)
            )
            return frozenset(rows)

    async def can_see_presence(self, viewer_id: int, subject_id: int) -> bool:
        """Self, friends and anyone sharing a conversation."""
        if viewer_id == subject_id:
            return True
        related = related_users(viewer_id, [subject_id])
        async with self._engine.connect() as connection:
            return bool(await connection.scalar(select(exists(related))))  # type: ignore[arg-type]

    async def last_active(self, user_id: int) -> int | None:
        """The stored ``last_active_at`` of ``user_id``."""
        async with self._engine.connect() as connection:
            return await connection.scalar(select(User.last_active_at).where(User.id == user_id))

    async def record_last_active(self, activity: Mapping[int, int]) -> None:
        """Store each user's ``last_active_at`` (only ever forward): one statement, one transaction."""
        if not activity:
            return
        params = [{"user": user_id, "at": at_ms} for user_id, at_ms in activity.items()]
        async with self._engine.begin() as connection:
            await connection.execute(_FORWARD_LAST_ACTIVE, params)


# Core: executemany of one UPDATE, not the ORM's bulk by key.
_FORWARD_LAST_ACTIVE = (
    update(User)
    .where(
        User.id == bindparam("user"),
        User.last_active_at.is_(None) | (User.last_active_at < bindparam("at")),
    )
    .values(last_active_at=bindparam("at"))
)
