"""The account store's answer to the broker at CONNECT: is this device still signed in?"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.db.models import Device

__all__ = ["SqlDeviceSessions"]


class SqlDeviceSessions:
    """``hubbub.sessions.DeviceSessions`` over the devices table (an ended device has no row)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def is_signed_in(self, user_id: int, device_id: str) -> bool:
        """Whether ``device_id`` is a device of ``user_id`` that has not been ended."""
        async with self._sessions() as session:
            owner = await session.scalar(select(Device.user_id).where(Device.id == device_id))
        return owner == user_id
