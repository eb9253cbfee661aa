"""Ending devices: the account store forgets them, then their live connections are closed.

Used by logout, a password change (every other device), the device list, and the reuse of a
rotated-out refresh token. The order matters (``hubbub.sessions``): once the removal is
committed the device's tokens are refused by REST and at CONNECT, so closing its live
connections afterwards leaves it no way back in.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from sqlalchemy.ext.asyncio import AsyncSession

from api.state import AppState
from api.store import accounts
from hubbub.sessions import DeviceEnded, EndReason

__all__ = ["end_devices"]

logger = logging.getLogger(__name__)


async def end_devices(
    state: AppState, session: AsyncSession, user_id: int, device_ids: Collection[str], reason: EndReason
) -> list[str]:
    """Sign ``device_ids`` of ``user_id`` out for good; the ids that were signed in."""
    ended = await accounts.delete_devices(session, user_id, device_ids)
    await session.commit()  # stored before the broker hears of it
    for device_id in ended:
        logger.info("ended device_id=%s of user_id=%s (%s)", device_id, user_id, reason)
        try:
            await state.live_connections.end_device(DeviceEnded(user_id, device_id, reason))
        except Exception:
            # Revoked all the same: refused by REST and at CONNECT; only the open connection lingers.
            logger.exception("closing the live connections of device_id=%s failed", device_id)
    return ended
