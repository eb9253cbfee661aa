"""The account store's side of push: registrations, mutes and badges (``PushDirectory``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.db.models import Conversation, Member, PushRegistration, User
from hubbub.envelope import CommittedMessage
from hubbub.stores import MessageStore, PushAudience, PushRecipient, PushToken

__all__ = ["SqlPushDirectory"]


class SqlPushDirectory:
    """Answers the notifier: who of the offline members gets a push, with which tokens and badge."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        messages: MessageStore,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._sessions = sessions
        self._messages = messages
        self._clock_ms = clock_ms

    async def audience(self, message: CommittedMessage, user_ids: Collection[int]) -> PushAudience:
        """Members among ``user_ids`` who did not mute the conversation and have a live token."""
        async with self._sessions() as session:
            sender = await session.get(User, message.sender_id)
            conversation = await session.get(Conversation, message.conversation_id)
            unmuted = await session.scalars(
                select(Member.user_id).where(
                    Member.conversation_id == message.conversation_id,
                    Member.user_id.in_(list(user_ids)),
                    Member.muted.is_(False),
                )
            )
            wanted = list(unmuted)
            registrations = await session.scalars(
                select(PushRegistration).where(
                    PushRegistration.user_id.in_(wanted),
                    PushRegistration.token.is_not(None),
                    PushRegistration.rejected_at.is_(None),
                )
            )
            tokens: dict[int, list[PushToken]] = {}
            for registration in registrations:
                assert registration.token is not None  # noqa: S101 - filtered above
                tokens.setdefault(registration.user_id, []).append(
                    PushToken.stored(registration.device_id, registration.provider, registration.token)
                )
            recipients = tuple(
                [
                    PushRecipient(user_id, await self._badge(session, user_id), tuple(mine))
                    for user_id, mine in tokens.items()
                ]
            )
        return PushAudience(
            sender_name=sender.display_name if sender else "Someone",
            conversation_title=conversation.title if conversation and conversation.kind == "group" else None,
            recipients=recipients,
        )

    async def _badge(self, session: AsyncSession, user_id: int) -> int:
        """The user's unread messages over all its conversations (the app icon's badge)."""
        markers = dict(
            (
                await session.execute(
                    select(Member.conversation_id, Member.last_read_seq).where(Member.user_id == user_id)
                )
            )
            .tuples()
            .all()
        )
        latest = await self._messages.latest_seqs(list(markers))
        behind = {cid: markers[cid] for cid, newest in latest.items() if newest > markers[cid]}
        return sum((await self._messages.unread_counts(behind, user_id)).values()) if behind else 0

    async def remove_token(self, token_id: str) -> int | None:
        """Mark the device's registration rejected (it must register again); its user, if any."""
        async with self._sessions() as session:
            user_id = await session.scalar(
                update(PushRegistration)
                .where(PushRegistration.device_id == token_id)
                .values(token=None, rejected_at=self._clock_ms())
                .returning(PushRegistration.user_id)
            )
            await session.commit()
        return user_id
