"""The account store's answer to "who is in this conversation" (``hubbub.stores.Directory``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.db.models import Conversation, Member

__all__ = ["SqlDirectory"]


class SqlDirectory:
    """Membership lookups for the broker's ingest and fan-out."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def members(self, conversation_id: int) -> frozenset[int] | None:
        """Member user ids, or ``None`` if the conversation does not exist."""
        async with self._sessions() as session:
            if await session.get(Conversation, conversation_id) is None:
                return None
            rows = await session.scalars(
                select(Member.user_id).where(Member.conversation_id == conversation_id)
            )
            return frozenset(rows)
