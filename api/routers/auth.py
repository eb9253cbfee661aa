"""Login, token refresh and logout. A login is bound to one device: its MQTT client id.

A device's refresh tokens rotate: each refresh retires the token it was given. A retired
token that comes back was copied (OAuth 2.0 Security Best Current Practice, refresh token
rotation): the whole family is revoked and the device ended, wherever its tokens are.
"""

from __future__ import annotations

import logging
import secrets
from typing import NoReturn

from fastapi import APIRouter, Request, status

from api.db.models import User
from api.deps import CurrentDevice, SessionDep, StateDep
from api.ratelimit import client_address
from api.schemas import RefreshRequest, TokenRequest, TokenResponse
from api.signout import end_devices
from api.state import AppState
from api.store import accounts
from hubbub.errors import RateLimited, Unauthorized

__all__ = ["router"]

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/auth", tags=["auth"])

_BAD_CREDENTIALS = "wrong username or password"
_TOO_MANY = "too many login attempts; try again later"


def _token_response(state: AppState, user: User, device_id: str, refresh_token: str) -> TokenResponse:
    brokers = state.brokers()
    return TokenResponse(
        access_token=state.tokens.issue_access(user.id, device_id),
        refresh_token=refresh_token,
        expires_in=state.tokens.access_ttl_s,
        user_id=str(user.id),
        device_id=device_id,
        mqtt=brokers[0],
        brokers=brokers,
    )


@router.post("/token")
async def login(body: TokenRequest, request: Request, state: StateDep, session: SessionDep) -> TokenResponse:
    """Exchange a password for tokens; a login without ``device_id`` registers a new device.

    Wrong passwords for one username from one address make that pair wait longer and longer
    (429 with ``Retry-After``); the same username from elsewhere is not slowed down.
    """
    address = client_address(request, state.settings.trusted_proxy_networks)
    pair = (body.username.lower(), address)
    retry_after = state.address_limiter.hit(address) or state.login_backoff.retry_after(pair)
    if retry_after is not None:
        raise RateLimited(_TOO_MANY, retry_after=retry_after)
    user = await accounts.get_user_by_username(session, body.username)
    if not await state.passwords.verify(user.password_hash if user else None, body.password) or user is None:
        state.login_backoff.failed(pair)
        raise Unauthorized(_BAD_CREDENTIALS, code="bad_credentials")
    state.login_backoff.succeeded(pair)
    now = state.clock_ms()
    if body.device_id is None:
        device = await accounts.register_device(
            session,
            device_id=str(state.ids.next_id()),
            user_id=user.id,
            name=body.device_name or "device",
            now=now,
        )
        logger.info("registered device_id=%s for user_id=%s", device.id, user.id)
    else:
        known = await accounts.find_device(session, body.device_id)
        if known is None or known.user_id != user.id:
            raise Unauthorized("unknown device_id for this user", code="unknown_device")
        device = known
        device.last_login_at = now
        if body.device_name:
            device.name = body.device_name
    refresh_token = secrets.token_urlsafe(32)
    await accounts.start_refresh_family(
        session,
        token=refresh_token,
        device_id=device.id,
        user_id=user.id,
        expires_at=now + state.settings.refresh_token_ttl_s * 1000,
    )
    return _token_response(state, user, device.id, refresh_token)


@router.post("/refresh")
async def refresh(body: RefreshRequest, state: StateDep, session: SessionDep) -> TokenResponse:
    """Trade a refresh token for a new access token and a new refresh token (the old one retires).

    Presenting a retired token ends its device (401 ``refresh_token_reused``).
    """
    now = state.clock_ms()
    live = await accounts.find_refresh(session, body.refresh_token)
    if live is None:
        retired = await accounts.find_retired(session, body.refresh_token)
        if retired is not None:
            device = await accounts.find_device(session, retired.device_id)
            if device is not None:
                await _reused(state, session, device.user_id, device.id)
        raise Unauthorized("refresh token is invalid or expired", code="invalid_token")
    if live.expires_at <= now:
        raise Unauthorized("refresh token is invalid or expired", code="invalid_token")
    user = await accounts.get_user(session, live.user_id)
    if user is None:
        raise Unauthorized("account no longer exists", code="invalid_token")
    device_id = live.device_id
    new_token = secrets.token_urlsafe(32)
    expires_at = now + state.settings.refresh_token_ttl_s * 1000
    if not await accounts.rotate_refresh(session, live, new_token=new_token, expires_at=expires_at, now=now):
        await _reused(state, session, user.id, device_id)  # another refresh retired it just now
    return _token_response(state, user, device_id, new_token)


async def _reused(state: AppState, session: SessionDep, user_id: int, device_id: str) -> NoReturn:
    logger.warning("a retired refresh token of device_id=%s was used again: ending the device", device_id)
    await end_devices(state, session, user_id, [device_id], "refresh_token_reused")
    raise Unauthorized(
        "this refresh token was already used: the device is signed out", code="refresh_token_reused"
    )


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(claims: CurrentDevice, state: StateDep, session: SessionDep) -> None:
    """Sign this device out at once: its tokens are refused and its live connections closed."""
    await end_devices(state, session, claims.user_id, [claims.device_id], "logout")
