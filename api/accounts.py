"""Queries of the account store: users, devices and refresh tokens."""

from __future__ import annotations

import hashlib

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.db.models import Device, RefreshToken, User
from hubbub.errors import Conflict

__all__ = [
    "create_user",
    "digest",
    "find_device",
    "find_refresh",
    "get_user",
    "get_user_by_username",
    "register_device",
    "revoke_device_tokens",
    "store_refresh",
]


def digest(token: str) -> str:
    """What is stored of a refresh token: a leaked table cannot be replayed."""
    return hashlib.sha256(token.encode()).hexdigest()


async def create_user(
    session: AsyncSession, *, user_id: int, username: str, display_name: str, password_hash: str, now: int
) -> User:
    """Insert a user; ``Conflict`` if the (case-folded) username is taken."""
    user = User(
        id=user_id,
        username=username.lower(),
        display_name=display_name,
        password_hash=password_hash,
        created_at=now,
    )
    session.add(user)
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict("username is taken", code="username_taken") from exc
    return user


async def get_user(session: AsyncSession, user_id: int) -> User | None:
    """The user with ``user_id``."""
    return await session.get(User, user_id)


async def get_user_by_username(session: AsyncSession, username: str) -> User | None:
    """The user named ``username``, whatever its case."""
    return await session.scalar(select(User).where(User.username == username.lower()))


async def find_device(session: AsyncSession, device_id: str) -> Device | None:
    """The device with ``device_id``."""
    return await session.get(Device, device_id)


async def register_device(
    session: AsyncSession, *, device_id: str, user_id: int, name: str, now: int
) -> Device:
    """Record a new device of ``user_id`` (flushed, committed with its refresh token)."""
    device = Device(id=device_id, user_id=user_id, name=name, created_at=now, last_login_at=now)
    session.add(device)
    await session.flush()
    return device


async def store_refresh(
    session: AsyncSession, *, token: str, device_id: str, user_id: int, expires_at: int
) -> None:
    """Make ``token`` the one live refresh token of ``device_id`` and commit."""
    await session.execute(delete(RefreshToken).where(RefreshToken.device_id == device_id))
    session.add(
        RefreshToken(token_hash=digest(token), device_id=device_id, user_id=user_id, expires_at=expires_at)
    )
    await session.commit()


async def find_refresh(session: AsyncSession, token: str) -> RefreshToken | None:
    """The stored refresh token matching ``token``."""
    return await session.get(RefreshToken, digest(token))


async def revoke_device_tokens(session: AsyncSession, device_id: str) -> None:
    """Log ``device_id`` out: its refresh token stops working at once."""
    await session.execute(delete(RefreshToken).where(RefreshToken.device_id == device_id))
    await session.commit()
