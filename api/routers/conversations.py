"""Conversations: 1:1 and groups, members, titles and read markers.

Every change reaches the inboxes of those concerned as a ``conversation`` event, and the
broker forgets its cached membership of that conversation at once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response, status

from api.db.models import Conversation
from api.deps import CurrentUser, SessionDep, StateDep
from api.schemas import (
    ConversationList,
    ConversationOut,
    ConversationUpdate,
    DirectCreate,
    GroupCreate,
    MemberAdd,
    ReadMarker,
    ReadState,
)
from api.store import conversations as queries
from api.views import build_conversation_out, conversation_event, conversation_out, require_membership
from hubbub.errors import Conflict, Forbidden, InvalidInput, NotFound
from hubbub.events import receipt_event
from hubbub.ids import parse_id

__all__ = ["router"]

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_conversation(
    body: Annotated[DirectCreate | GroupCreate, Body(discriminator="type")],
    user: CurrentUser,
    state: StateDep,
    session: SessionDep,
    response: Response,
) -> ConversationOut:
    """The 1:1 chat with a user (200 if it existed), or a new group (201)."""
    now = state.clock_ms()
    if isinstance(body, DirectCreate):
        other = int(body.user_id)
        if other == user.id:
            raise InvalidInput("a direct conversation needs another user", code="self_conversation")
        if not await queries.users_by_id(session, [other]):
            raise InvalidInput("no such user", code="unknown_user", data={"user_ids": [body.user_id]})
        conversation, created = await queries.create_direct(
            session, conversation_id=state.ids.next_id(), me=user.id, other=other, now=now
        )
        out = await conversation_out(session, conversation)
        if created:
            await session.commit()  # members hear of it only once it is stored
            await state.inbox.publish([user.id, other], conversation_event("created", out, actor_id=user.id))
        else:
            response.status_code = status.HTTP_200_OK
        return out
    member_ids = list(dict.fromkeys(int(member) for member in body.member_ids if int(member) != user.id))
    limit = state.settings.max_group_members
    if len(member_ids) + 1 > limit:
        raise InvalidInput(
            f"a group has at most {limit} members, its creator included",
            code="too_many_members",
            data={"limit": limit},
        )
    known = await queries.users_by_id(session, member_ids)
    unknown = [str(member) for member in member_ids if member not in known]
    if unknown:
        raise InvalidInput("no such users", code="unknown_user", data={"user_ids": unknown})
    conversation = await queries.create_group(
        session,
        conversation_id=state.ids.next_id(),
        creator=user.id,
        title=body.title,
        member_ids=member_ids,
        now=now,
    )
    out = await conversation_out(session, conversation)
    await session.commit()  # members hear of it only once it is stored
    await state.inbox.publish([user.id, *member_ids], conversation_event("created", out, actor_id=user.id))
    return out


@router.get("")
async def list_conversations(user: CurrentUser, state: StateDep, session: SessionDep) -> ConversationList:
    """My conversations with their last message and my unread count, most recent first."""
    rows = await queries.memberships(session, user.id)
    ids = [conversation.id for conversation, _ in rows]
    last = await state.messages.last_messages(ids)
    # Only a conversation with a message past my marker can have unread ones.
    behind = {
        conversation.id: member.last_read_seq
        for conversation, member in rows
        if conversation.id in last and last[conversation.id].seq > member.last_read_seq
    }
    unread = await state.messages.unread_counts(behind, user.id) if behind else {}
    members = await queries.members_of(session, ids)
    users = await queries.users_by_id(session, list({m.user_id for group in members.values() for m in group}))
    listed = [
        build_conversation_out(
            conversation,
            members.get(conversation.id, []),
            users,
            last_message=last.get(conversation.id),
            unread_count=unread.get(conversation.id, 0),
            last_read_seq=member.last_read_seq,
        )
        for conversation, member in rows
    ]
    # Snowflakes sort by time: the last message's id, or the conversation's own for an empty one.
    listed.sort(
        key=lambda out: int(out.last_message.message_id if out.last_message else out.id), reverse=True
    )
    return ConversationList(conversations=listed)


@router.get("/{conversation_id}")
async def get_conversation(
    conversation_id: str, user: CurrentUser, state: StateDep, session: SessionDep
) -> ConversationOut:
    """One of my conversations; 404 for anyone else."""
    member = await require_membership(session, conversation_id, user.id)
    conversation = await session.get(Conversation, member.conversation_id)
    assert conversation is not None  # noqa: S101 - a membership row has its conversation (foreign key)
    last = await state.messages.last_messages([conversation.id])
    unread = await state.messages.unread_counts({conversation.id: member.last_read_seq}, user.id)
    return await conversation_out(
        session,
        conversation,
        last_message=last.get(conversation.id),
        unread_count=unread[conversation.id],
        last_read_seq=member.last_read_seq,
    )


async def _group(session: SessionDep, conversation_id: str, user_id: int) -> Conversation:
    member = await require_membership(session, conversation_id, user_id)
    conversation = await session.get(Conversation, member.conversation_id)
    if conversation is None or conversation.kind != queries.GROUP:
        raise InvalidInput("only groups have a title and members to change", code="not_a_group")
    return conversation


@router.patch("/{conversation_id}")
async def rename(
    conversation_id: str, body: ConversationUpdate, user: CurrentUser, state: StateDep, session: SessionDep
) -> ConversationOut:
    """Rename a group (any member may)."""
    conversation = await _group(session, conversation_id, user.id)
    conversation.title = body.title
    await session.commit()
    out = await conversation_out(session, conversation)
    recipients = [int(member.user_id) for member in out.members]
    await state.inbox.publish(recipients, conversation_event("renamed", out, actor_id=user.id))
    return out


@router.post("/{conversation_id}/members")
async def add_member(
    conversation_id: str, body: MemberAdd, user: CurrentUser, state: StateDep, session: SessionDep
) -> ConversationOut:
    """Add a user to a group (admins only); at most ``max_group_members`` members."""
    conversation = await _group(session, conversation_id, user.id)
    me = await queries.get_membership(session, conversation.id, user.id)
    if me is None or me.role != queries.ADMIN:
        raise Forbidden("only a group's admins add members", code="not_admin")
    new_member = int(body.user_id)
    if not await queries.users_by_id(session, [new_member]):
        raise InvalidInput("no such user", code="unknown_user", data={"user_ids": [body.user_id]})
    if await queries.get_membership(session, conversation.id, new_member) is None:
        limit = state.settings.max_group_members
        if await queries.member_count(session, conversation.id) >= limit:
            raise Conflict(f"the group is full ({limit} members)", code="group_full", data={"limit": limit})
        await queries.add_member(
            session, conversation_id=conversation.id, user_id=new_member, now=state.clock_ms()
        )
        await session.commit()
        state.inbox.membership_changed(conversation.id)
        out = await conversation_out(session, conversation)
        recipients = [int(member.user_id) for member in out.members]
        event = conversation_event("member_added", out, actor_id=user.id, user_id=new_member)
        await state.inbox.publish(recipients, event)
        return out
    return await conversation_out(session, conversation)


@router.delete("/{conversation_id}/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_member(
    conversation_id: str, user_id: str, user: CurrentUser, state: StateDep, session: SessionDep
) -> None:
    """Leave a group, or remove someone from it (admins only)."""
    conversation = await _group(session, conversation_id, user.id)
    target = parse_id(user_id)
    membership = (
        await queries.get_membership(session, conversation.id, target) if target is not None else None
    )
    if membership is None:
        raise NotFound("not a member of this group")
    if membership.user_id != user.id:
        me = await queries.get_membership(session, conversation.id, user.id)
        if me is None or me.role != queries.ADMIN:
            raise Forbidden("only a group's admins remove others", code="not_admin")
    removed = membership.user_id
    await queries.remove_member(session, membership)
    out = await conversation_out(session, conversation)
    await session.commit()  # before the cache is dropped, or a lookup could cache the old members
    state.inbox.membership_changed(conversation.id)
    recipients = [removed, *(int(member.user_id) for member in out.members)]
    await state.inbox.publish(
        recipients, conversation_event("member_removed", out, actor_id=user.id, user_id=removed)
    )


@router.post("/{conversation_id}/read")
async def mark_read(
    conversation_id: str, body: ReadMarker, user: CurrentUser, state: StateDep, session: SessionDep
) -> ReadState:
    """Move my read marker forward (never back, never past the newest message)."""
    member = await require_membership(session, conversation_id, user.id)
    latest = (await state.messages.latest_seqs([member.conversation_id])).get(member.conversation_id, 0)
    target = min(body.seq, latest)
    if target > member.last_read_seq:
        member.last_read_seq = target
        await session.commit()
        recipients = [member.user_id for member in await queries.members(session, member.conversation_id)]
        await state.inbox.publish(recipients, receipt_event(member.conversation_id, user.id, target))
    unread = await state.messages.unread_counts({member.conversation_id: member.last_read_seq}, user.id)
    return ReadState(last_read_seq=member.last_read_seq, unread_count=unread[member.conversation_id])
