"""Login, token refresh and logout. A login is bound to one device: its MQTT client id."""

from __future__ import annotations

import logging
import secrets

from fastapi import APIRouter, Request, status

from api import accounts
from api.db.models import User
from api.deps import CurrentDevice, SessionDep, StateDep
from api.schemas import RefreshRequest, TokenRequest, TokenResponse
from api.state import AppState
from hubbub.errors import RateLimited, Unauthorized

__all__ = ["router"]

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/auth", tags=["auth"])

_BAD_CREDENTIALS = "wrong username or password"


def _token_response(state: AppState, user: User, device_id: str, refresh_token: str) -> TokenResponse:
    return TokenResponse(
        access_token=state.tokens.issue_access(user.id, device_id),
        refresh_token=refresh_token,
        expires_in=state.tokens.access_ttl_s,
        user_id=str(user.id),
        device_id=device_id,
        mqtt=state.broker,
    )


def _throttle(state: AppState, username: str, address: str) -> None:
    for limiter, key in ((state.address_limiter, address), (state.login_limiter, username.lower())):
        retry_after = limiter.hit(key)
        if retry_after is not None:
            raise RateLimited("too many login attempts; try again later", retry_after=retry_after)


@router.post("/token")
async def login(body: TokenRequest, request: Request, state: StateDep, session: SessionDep) -> TokenResponse:
    """Exchange a password for tokens; a login without ``device_id`` registers a new device."""
    _throttle(state, body.username, request.client.host if request.client else "unknown")
    user = await accounts.get_user_by_username(session, body.username)
    if not await state.passwords.verify(user.password_hash if user else None, body.password) or user is None:
        raise Unauthorized(_BAD_CREDENTIALS, code="bad_credentials")
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
    await accounts.store_refresh(
        session,
        token=refresh_token,
        device_id=device.id,
        user_id=user.id,
        expires_at=now + state.settings.refresh_token_ttl_s * 1000,
    )
    return _token_response(state, user, device.id, refresh_token)


@router.post("/refresh")
async def refresh(body: RefreshRequest, state: StateDep, session: SessionDep) -> TokenResponse:
    """Trade a refresh token for a new access token and a new refresh token (the old one dies)."""
    stored = await accounts.find_refresh(session, body.refresh_token)
    if stored is None or stored.expires_at <= state.clock_ms():
        raise Unauthorized("refresh token is invalid or expired", code="invalid_token")
    user = await accounts.get_user(session, stored.user_id)
    if user is None:
        raise Unauthorized("account no longer exists", code="invalid_token")
    new_token = secrets.token_urlsafe(32)
    await accounts.store_refresh(
        session,
        token=new_token,
        device_id=stored.device_id,
        user_id=user.id,
        expires_at=state.clock_ms() + state.settings.refresh_token_ttl_s * 1000,
    )
    return _token_response(state, user, stored.device_id, new_token)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(claims: CurrentDevice, session: SessionDep) -> None:
    """Revoke the calling device's refresh token; its access token lapses on its own."""
    await accounts.revoke_device_tokens(session, claims.device_id)
