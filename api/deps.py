"""FastAPI dependencies: the shared state, a database session per request, the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from api import accounts
from api.db.models import User
from api.state import AppState
from hubbub.errors import InvalidToken, Unauthorized
from hubbub.tokens import AccessClaims

__all__ = ["CurrentDevice", "CurrentUser", "SessionDep", "StateDep"]

_bearer = HTTPBearer(auto_error=False, description="The access token from POST /v1/auth/token")


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.hubbub
    return state


StateDep = Annotated[AppState, Depends(_state)]


async def _session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(_session)]


async def _current_device(
    state: StateDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> AccessClaims:
    if credentials is None:
        raise Unauthorized("missing bearer token")
    try:
        claims = state.tokens.verify(credentials.credentials)
    except InvalidToken as exc:
        raise Unauthorized(str(exc), code="invalid_token") from exc
    if claims.service is not None:
        raise Unauthorized("service tokens cannot call the user API", code="invalid_token")
    return claims


CurrentDevice = Annotated[AccessClaims, Depends(_current_device)]


async def _current_user(session: SessionDep, claims: CurrentDevice) -> User:
    user = await accounts.get_user(session, claims.user_id)
    if user is None:
        raise Unauthorized("account no longer exists", code="invalid_token")
    return user


CurrentUser = Annotated[User, Depends(_current_user)]
