"""FastAPI dependencies: the shared state, the request's unit of work, the caller.

The session is the request's unit of work (the one commit rule, ``api.store``): it commits
once the handler has returned and before the response leaves, and rolls back if the
handler raises.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from api.db.models import User
from api.state import AppState
from api.store import accounts
from hubbub.errors import InvalidToken, Unauthorized
from hubbub.tokens import AccessClaims

__all__ = ["CurrentDevice", "CurrentUser", "SessionDep", "StateDep", "VerifiedToken", "signed_out"]

_bearer = HTTPBearer(auto_error=False, description="The access token from POST /v1/auth/token")


async def _state(request: Request) -> AppState:
    # ``async``, as every dependency here: FastAPI runs a plain ``def`` one in a worker thread,
    # a hand-off per request that costs more than the work.
    state: AppState = request.app.state.hubbub
    return state


StateDep = Annotated[AppState, Depends(_state)]


async def _unit_of_work(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.sessions() as session:
        yield session
        await session.commit()


# "function": committed before the response is sent, so a client never reads ahead of it.
SessionDep = Annotated[AsyncSession, Depends(_unit_of_work, scope="function")]


async def _verified_token(
    state: StateDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> AccessClaims:
    """A device's access token, verified by its signature and expiry alone (no database)."""
    if credentials is None:
        raise Unauthorized("missing bearer token")
    try:
        claims = state.tokens.verify(credentials.credentials)
    except InvalidToken as exc:
        raise Unauthorized(str(exc), code="invalid_token") from exc
    if claims.service is not None:
        raise Unauthorized("service tokens cannot call the user API", code="invalid_token")
    return claims


# For reads that reveal nothing of an account (``GET /v1/brokers``): a signed-out device's token
# still passes until it expires, as it would at a broker's CONNECT without its signed-in check.
VerifiedToken = Annotated[AccessClaims, Depends(_verified_token)]


async def _current_device(session: SessionDep, claims: VerifiedToken) -> AccessClaims:
    """The caller's verified claims, refused at once once its device has been ended."""
    device = await accounts.find_device(session, claims.device_id)
    if device is None or device.user_id != claims.user_id:
        raise signed_out()
    return claims


def signed_out() -> Unauthorized:
    """The refusal of a valid token whose device has been ended."""
    return Unauthorized("this device was signed out; log in again", code="signed_out")


CurrentDevice = Annotated[AccessClaims, Depends(_current_device)]


async def _current_user(session: SessionDep, claims: CurrentDevice) -> User:
    user = await accounts.get_user(session, claims.user_id)
    if user is None:
        raise Unauthorized("account no longer exists", code="invalid_token")
    return user


CurrentUser = Annotated[User, Depends(_current_user)]
