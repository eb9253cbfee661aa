"""The account store's answer to the broker at CONNECT: is this device still signed in?

Asked once per CONNECT, so a reconnect storm asks it thousands of times a second: the
concurrent questions are answered together, one ``SELECT ... WHERE id IN (...)`` per batch
(``BatchedLookup``), not one query each.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.db.models import Device
from api.store.batched import BatchedLookup

__all__ = ["SqlDeviceSessions"]


class SqlDeviceSessions:
    """``hubbub.sessions.DeviceSessions`` over the devices table (an ended device has no row)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._owners: BatchedLookup[str, int] = BatchedLookup(self._load_owners)

    async def is_signed_in(self, user_id: int, device_id: str) -> bool:
        """Whether ``device_id`` is a device of ``user_id`` that has not been ended."""
        return await self._owners.get(device_id) == user_id

    async def _load_owners(self, device_ids: Collection[str]) -> dict[str, int]:
        async with self._sessions() as session:
            rows = await session.execute(select(Device.id, Device.user_id).where(Device.id.in_(device_ids)))
            return dict(rows.all())
