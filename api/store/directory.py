"""The account store's answers to the broker (``hubbub.stores.Directory``).

The questions asked per connection (may this device see that presence, when was that user
last active, store these users' activity) run as Core statements on a pooled connection: an
ORM session per question cost about as much CPU as the query itself, on every (re)connect.

The users' activity (a batch of up to 500 users from ``messaging/last_active.py``, a few a
second in a connect storm) is one ``UPDATE ... FROM`` a table of the batch's ``(user, time)``
pairs, the whole batch in one or two bound parameters: an ``executemany`` of one ``UPDATE`` per
user cost 6-7 µs of the broker's CPU per user (SQLAlchemy's per-row parameter processing, and
aiosqlite's per-row hop on SQLite), one statement 2.2-2.5 µs, on SQLite and PostgreSQL alike.
The pairs' table is the database's own: SQLite's ``json_each`` over a JSON object
``{user: time}`` (SQLite >= 3.33 for ``UPDATE ... FROM``; JSON is built in since 3.38), and
PostgreSQL's ``unnest`` of two ``BIGINT[]`` arrays. Either is one statement whatever the batch's
size, so it is compiled once (and prepared once by asyncpg). Only ever forward: a time older
than the stored one is no update.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from sqlalchemy import BigInteger, bindparam, cast, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement, Update

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
        self._on_sqlite = engine.dialect.name == "sqlite"

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
        async with self._engine.begin() as connection:
            if self._on_sqlite:
                pairs = orjson.dumps(activity, option=orjson.OPT_NON_STR_KEYS).decode()
                await connection.execute(_FORWARD_ON_SQLITE, {"activity": pairs})
            else:
                await connection.execute(
                    _FORWARD_ON_POSTGRES, {"ids": list(activity), "ats": list(activity.values())}
                )


def _forward_last_active(user_id: ColumnElement[int], at_ms: ColumnElement[int]) -> Update:
    """``UPDATE users`` of ``user_id`` to ``at_ms``, unless what it holds is as late or later."""
    later = or_(User.last_active_at.is_(None), User.last_active_at < at_ms)
    return update(User).where(User.id == user_id, later).values(last_active_at=at_ms)


# SQLite: the batch as one JSON object {"user id": time}, read by json_each as rows (key, value).
_ACTIVITY_JSON = func.json_each(bindparam("activity")).table_valued("key", "value").alias("activity")
_FORWARD_ON_SQLITE = _forward_last_active(cast(_ACTIVITY_JSON.c.key, BigInteger), _ACTIVITY_JSON.c.value)

# PostgreSQL: the batch as two arrays of the same length, users and times, zipped by unnest.
_ACTIVITY_ARRAYS = (
    func.unnest(bindparam("ids", type_=ARRAY(BigInteger)), bindparam("ats", type_=ARRAY(BigInteger)))
    .table_valued("id", "at")
    .render_derived(name="activity")
)
_FORWARD_ON_POSTGRES = _forward_last_active(_ACTIVITY_ARRAYS.c.id, _ACTIVITY_ARRAYS.c.at)
