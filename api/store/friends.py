"""Queries of friendships and friend requests (they flush; the caller commits)."""

from __future__ import annotations

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.db.models import FriendRequest, Friendship, User

__all__ = ["are_friends", "befriend", "friends_of", "pending_request", "remove", "request", "requests_of"]


async def are_friends(session: AsyncSession, a: int, b: int) -> bool:
    """Whether ``a`` and ``b`` are friends."""
    return await session.get(Friendship, (a, b)) is not None


async def pending_request(session: AsyncSession, from_id: int, to_id: int) -> FriendRequest | None:
    """The pending request from ``from_id`` to ``to_id``."""
    return await session.get(FriendRequest, (from_id, to_id))


async def request(session: AsyncSession, from_id: int, to_id: int, now: int) -> None:
    """Record a request (idempotent)."""
    if await pending_request(session, from_id, to_id) is None:
        session.add(FriendRequest(from_id=from_id, to_id=to_id, created_at=now))
        await session.flush()


async def befriend(session: AsyncSession, a: int, b: int, now: int) -> None:
    """Make ``a`` and ``b`` friends (both directions), dropping requests between them."""
    await session.execute(
        delete(FriendRequest).where(
            or_(
                (FriendRequest.from_id == a) & (FriendRequest.to_id == b),
                (FriendRequest.from_id == b) & (FriendRequest.to_id == a),
            )
        )
    )
    for user_id, friend_id in ((a, b), (b, a)):
        if await session.get(Friendship, (user_id, friend_id)) is None:
            session.add(Friendship(user_id=user_id, friend_id=friend_id, created_at=now))
    await session.flush()


async def remove(session: AsyncSession, a: int, b: int) -> None:
    """End the friendship of ``a`` and ``b`` and any request between them."""
    await session.execute(
        delete(Friendship).where(
            or_(
                (Friendship.user_id == a) & (Friendship.friend_id == b),
                (Friendship.user_id == b) & (Friendship.friend_id == a),
            )
        )
    )
    await session.execute(
        delete(FriendRequest).where(
            or_(
                (FriendRequest.from_id == a) & (FriendRequest.to_id == b),
                (FriendRequest.from_id == b) & (FriendRequest.to_id == a),
            )
        )
    )


async def friends_of(session: AsyncSession, user_id: int) -> list[User]:
    """``user_id``'s friends by username."""
    query = (
        select(User)
        .join(Friendship, Friendship.friend_id == User.id)
        .where(Friendship.user_id == user_id)
        .order_by(User.username)
    )
    return list(await session.scalars(query))


async def requests_of(session: AsyncSession, user_id: int) -> tuple[list[User], list[User]]:
    """(incoming, outgoing) pending requests of ``user_id``."""
    incoming = (
        select(User)
        .join(FriendRequest, FriendRequest.from_id == User.id)
        .where(FriendRequest.to_id == user_id)
    )
    outgoing = (
        select(User)
        .join(FriendRequest, FriendRequest.to_id == User.id)
        .where(FriendRequest.from_id == user_id)
    )
    return list(await session.scalars(incoming)), list(await session.scalars(outgoing))
