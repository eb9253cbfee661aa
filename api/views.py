"""Building what the API shows of conversations, and the ``conversation`` events it sends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from api.db.models import Conversation, Member, User
from api.schemas import ConversationOut, MemberOut, MessageOut
from api.store import conversations as queries
from hubbub import events
from hubbub.envelope import CommittedMessage, format_time
from hubbub.errors import NotFound
from hubbub.events import ConversationAction, message_json
from hubbub.ids import parse_id

__all__ = [
    "build_conversation_out",
    "conversation_event",
    "conversation_out",
    "message_out",
    "require_membership",
]


def message_out(message: CommittedMessage) -> MessageOut:
    """A committed message as REST returns it."""
    return MessageOut(**message_json(message))


async def require_membership(session: AsyncSession, conversation_id: str, user_id: int) -> Member:
    """The caller's membership, or 404 — a non-member cannot tell a conversation exists."""
    parsed = parse_id(conversation_id)
    membership = await queries.get_membership(session, parsed, user_id) if parsed is not None else None
    if membership is None:
        raise NotFound("no such conversation")
    return membership


async def conversation_out(
    session: AsyncSession,
    conversation: Conversation,
    *,
    last_message: CommittedMessage | None = None,
    unread_count: int = 0,
    last_read_seq: int = 0,
) -> ConversationOut:
    """A conversation with its members' names."""
    members = await queries.members(session, conversation.id)
    users = await queries.users_by_id(session, [member.user_id for member in members])
    return build_conversation_out(
        conversation,
        members,
        users,
        last_message=last_message,
        unread_count=unread_count,
        last_read_seq=last_read_seq,
    )


def build_conversation_out(
    conversation: Conversation,
    members: Sequence[Member],
    users: Mapping[int, User],
    *,
    last_message: CommittedMessage | None,
    unread_count: int,
    last_read_seq: int,
) -> ConversationOut:
    """A conversation from rows already loaded (a list loads them for every conversation at once)."""
    return ConversationOut(
        id=str(conversation.id),
        type="direct" if conversation.kind == queries.DIRECT else "group",
        title=conversation.title,
        members=[
            MemberOut(
                user_id=str(member.user_id),
                username=users[member.user_id].username,
                display_name=users[member.user_id].display_name,
                role=member.role,
            )
            for member in members
            if member.user_id in users
        ],
        created_at=format_time(conversation.created_at),
        last_message=message_out(last_message) if last_message else None,
        unread_count=unread_count,
        last_read_seq=last_read_seq,
    )


def conversation_event(
    action: ConversationAction, conversation: ConversationOut, *, actor_id: int, user_id: int | None = None
) -> bytes:
    """The ``conversation`` inbox event for ``conversation`` as REST shows it."""
    info: events.ConversationInfo = {
        "id": conversation.id,
        "type": conversation.type,
        "title": conversation.title,
        "members": [
            {
                "user_id": member.user_id,
                "username": member.username,
                "display_name": member.display_name,
                "role": member.role,
            }
            for member in conversation.members
        ],
        "created_at": conversation.created_at,
    }
    return events.conversation_event(action, info, by=actor_id, user_id=user_id)
