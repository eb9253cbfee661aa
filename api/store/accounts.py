"""Queries of users, devices and refresh tokens (they flush; the caller commits).

A device's refresh tokens form one family: a login starts it, each refresh rotates the live
token out (its digest is kept as retired until it would have expired) and issues the next.
A retired token coming back means it was copied: the caller ends the device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection

from sqlalchemy import delete, select
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.db.models import Device, RefreshToken, RetiredRefreshToken, User
from hubbub.errors import Conflict

__all__ = [
    "create_user",
    "delete_devices",
    "devices_of",
    "digest",
    "find_device",
    "find_refresh",
    "find_retired",
    "get_user",
    "get_user_by_username",
    "register_device",
    "rotate_refresh",
    "start_refresh_family",
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
        await session.flush()
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


async def devices_of(session: AsyncSession, user_id: int) -> list[Device]:
    """``user_id``'s signed-in devices, most recently logged in first."""
    query = select(Device).where(Device.user_id == user_id).order_by(Device.last_login_at.desc(), Device.id)
    return list(await session.scalars(query))


async def register_device(
    session: AsyncSession, *, device_id: str, user_id: int, name: str, now: int
) -> Device:
    """Record a new device of ``user_id``."""
    device = Device(id=device_id, user_id=user_id, name=name, created_at=now, last_login_at=now)
    session.add(device)
    await session.flush()
    return device


async def delete_devices(session: AsyncSession, user_id: int, device_ids: Collection[str]) -> list[str]:
    """End devices of ``user_id`` for good (their tokens, cursors and push registration go too).

    Returns the ids that were signed in; a device id is never issued again.
    """
    if not device_ids:
        return []
    result = await session.execute(
        delete(Device).where(Device.user_id == user_id, Device.id.in_(list(device_ids))).returning(Device.id)
    )
    return list(result.scalars())


async def start_refresh_family(
    session: AsyncSession, *, token: str, device_id: str, user_id: int, expires_at: int
) -> None:
    """A login: ``token`` becomes the device's one live refresh token; earlier ones stop working."""
    await session.execute(delete(RefreshToken).where(RefreshToken.device_id == device_id))
    await session.execute(delete(RetiredRefreshToken).where(RetiredRefreshToken.device_id == device_id))
    session.add(
        RefreshToken(token_hash=digest(token), device_id=device_id, user_id=user_id, expires_at=expires_at)
    )
    await session.flush()


async def rotate_refresh(
    session: AsyncSession, live: RefreshToken, *, new_token: str, expires_at: int, now: int
) -> bool:
    """Retire ``live`` and make ``new_token`` the device's live token.

    ``False`` if ``live`` was retired meanwhile (a concurrent refresh with the same token):
    then nothing changed and the caller treats it as reuse.
    """
    claimed = await session.execute(delete(RefreshToken).where(RefreshToken.token_hash == live.token_hash))
    assert isinstance(claimed, CursorResult)  # noqa: S101 - a DELETE's result has a rowcount
    if claimed.rowcount != 1:
        return False
    await session.execute(
        delete(RetiredRefreshToken).where(
            RetiredRefreshToken.device_id == live.device_id, RetiredRefreshToken.expires_at <= now
        )
    )
    session.expunge(live)
    session.add(
        RetiredRefreshToken(token_hash=live.token_hash, device_id=live.device_id, expires_at=live.expires_at)
    )
    session.add(
        RefreshToken(
            token_hash=digest(new_token),
            device_id=live.device_id,
            user_id=live.user_id,
            expires_at=expires_at,
        )
    )
    await session.flush()
    return True


async def find_refresh(session: AsyncSession, token: str) -> RefreshToken | None:
    """The live refresh token matching ``token``."""
    return await session.get(RefreshToken, digest(token))


async def find_retired(session: AsyncSession, token: str) -> RetiredRefreshToken | None:
    """The rotated-out refresh token matching ``token``, if it is remembered."""
    return await session.get(RetiredRefreshToken, digest(token))
