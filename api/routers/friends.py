"""Friends: request, accept, decline, remove, list. Friends see each other's presence."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from api.deps import CurrentUser, SessionDep, StateDep
from api.routers.users import user_out
from api.schemas import MemberAdd, UserOut
from api.state import AppState
from api.store import accounts, friends
from hubbub.errors import InvalidInput, NotFound
from hubbub.events import FriendAction, friend_event
from hubbub.ids import parse_id

__all__ = ["router"]

router = APIRouter(prefix="/v1/friends", tags=["friends"])


class FriendsOut(BaseModel):
    """My friends and the requests waiting on either side."""

    friends: list[UserOut]
    incoming: list[UserOut]
    outgoing: list[UserOut]


class FriendStatus(BaseModel):
    """Where a friendship stands after a call."""

    status: Literal["pending", "friends"]


async def _notify(
    session: SessionDep, state: AppState, to_user: int, action: FriendAction, other: int
) -> None:
    """Tell ``to_user`` once the change is stored: an event must never announce a rolled-back change."""
    await session.commit()
    await state.inbox.publish([to_user], friend_event(action, other))


async def _other(session: SessionDep, user_id: str, me: int) -> int:
    other = parse_id(user_id)
    if other is None or await accounts.get_user(session, other) is None:
        raise NotFound("no such user")
    if other == me:
        raise InvalidInput("you cannot befriend yourself", code="self_friend")
    return other


@router.get("")
async def list_friends(user: CurrentUser, session: SessionDep) -> FriendsOut:
    """Friends, incoming and outgoing requests."""
    incoming, outgoing = await friends.requests_of(session, user.id)
    return FriendsOut(
        friends=[user_out(friend) for friend in await friends.friends_of(session, user.id)],
        incoming=[user_out(other) for other in incoming],
        outgoing=[user_out(other) for other in outgoing],
    )


@router.post("/requests", status_code=status.HTTP_201_CREATED)
async def send_request(
    body: MemberAdd, user: CurrentUser, state: StateDep, session: SessionDep, response: Response
) -> FriendStatus:
    """Ask to be friends; if they already asked me, we are friends now (200)."""
    other = await _other(session, body.user_id, user.id)
    if await friends.are_friends(session, user.id, other):
        response.status_code = status.HTTP_200_OK
        return FriendStatus(status="friends")
    if await friends.pending_request(session, other, user.id) is not None:
        await friends.befriend(session, user.id, other, state.clock_ms())
        await _notify(session, state, other, "accepted", user.id)
        response.status_code = status.HTTP_200_OK
        return FriendStatus(status="friends")
    await friends.request(session, user.id, other, state.clock_ms())
    await _notify(session, state, other, "requested", user.id)
    return FriendStatus(status="pending")


@router.post("/requests/{user_id}/accept")
async def accept(user_id: str, user: CurrentUser, state: StateDep, session: SessionDep) -> FriendStatus:
    """Accept a pending request from ``user_id``."""
    other = await _other(session, user_id, user.id)
    if await friends.pending_request(session, other, user.id) is None:
        raise NotFound("no pending request from this user")
    await friends.befriend(session, user.id, other, state.clock_ms())
    await _notify(session, state, other, "accepted", user.id)
    return FriendStatus(status="friends")


@router.post("/requests/{user_id}/decline", status_code=status.HTTP_204_NO_CONTENT)
async def decline(user_id: str, user: CurrentUser, state: StateDep, session: SessionDep) -> None:
    """Decline a pending request from ``user_id``."""
    other = await _other(session, user_id, user.id)
    if await friends.pending_request(session, other, user.id) is None:
        raise NotFound("no pending request from this user")
    await friends.remove(session, user.id, other)
    await _notify(session, state, other, "declined", user.id)


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def unfriend(user_id: str, user: CurrentUser, state: StateDep, session: SessionDep) -> None:
    """End a friendship, or withdraw my request."""
    other = await _other(session, user_id, user.id)
    await friends.remove(session, user.id, other)
    await _notify(session, state, other, "removed", user.id)
