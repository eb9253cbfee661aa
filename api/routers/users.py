"""Accounts: sign-up, profiles and lookup by id or username."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from api.db.models import User
from api.deps import CurrentDevice, CurrentUser, SessionDep, StateDep
from api.passwords import check_password
from api.schemas import ProfileUpdate, SignUp, UserOut
from api.signout import end_devices
from api.store import accounts
from hubbub.errors import Conflict, InvalidInput, NotFound, Unauthorized
from hubbub.ids import parse_id

__all__ = ["router"]

router = APIRouter(prefix="/v1/users", tags=["users"])


def user_out(user: User) -> UserOut:
    """The public view of ``user``."""
    return UserOut(id=str(user.id), username=user.username, display_name=user.display_name)


@router.post("", status_code=status.HTTP_201_CREATED)
async def sign_up(body: SignUp, state: StateDep, session: SessionDep) -> UserOut:
    """Create an account; 409 ``username_taken`` if the name (any case) exists.

    422 ``weak_password`` (``data.reason``: ``common``, ``repetitive``, ``contains_username``,
    ``control_characters``) for a password an attacker would try early.
    """
    check_password(body.password, body.username)
    if await accounts.get_user_by_username(session, body.username) is not None:
        raise Conflict("username is taken", code="username_taken")
    password_hash = await state.passwords.hash(body.password)
    user = await accounts.create_user(
        session,
        user_id=state.ids.next_id(),
        username=body.username,
        display_name=body.display_name or body.username,
        password_hash=password_hash,
        now=state.clock_ms(),
    )
    return user_out(user)


@router.get("/me")
async def me(user: CurrentUser) -> UserOut:
    """The caller's own account."""
    return user_out(user)


@router.patch("/me")
async def update_me(
    body: ProfileUpdate, user: CurrentUser, device: CurrentDevice, state: StateDep, session: SessionDep
) -> UserOut:
    """Change the display name and/or the password (which needs the current one).

    A new password signs every other device out (this one stays signed in).
    """
    if body.display_name is None and body.password is None:
        raise InvalidInput("nothing to change: give display_name and/or password")
    if body.display_name is not None:
        user.display_name = body.display_name
    if body.password is not None:
        if body.current_password is None:
            raise InvalidInput(
                "changing the password needs current_password", code="current_password_required"
            )
        if not await state.passwords.verify(user.password_hash, body.current_password):
            raise Unauthorized("current_password is wrong", code="bad_credentials")
        check_password(body.password, user.username)
        user.password_hash = await state.passwords.hash(body.password)
        mine = await accounts.devices_of(session, user.id)
        others = [other.id for other in mine if other.id != device.device_id]
        await end_devices(state, session, user.id, others, "password_changed")
    return user_out(user)


@router.get("")
async def find_by_username(
    _caller: CurrentUser, session: SessionDep, username: Annotated[str, Query(min_length=1, max_length=64)]
) -> list[UserOut]:
    """Look a user up by exact username (case-insensitive): an empty list if none."""
    user = await accounts.get_user_by_username(session, username)
    return [user_out(user)] if user else []


@router.get("/{user_id}")
async def get_user(user_id: str, _caller: CurrentUser, session: SessionDep) -> UserOut:
    """A user by id; 404 if there is none."""
    parsed = parse_id(user_id)
    user = await accounts.get_user(session, parsed) if parsed is not None else None
    if user is None:
        raise NotFound("no such user")
    return user_out(user)
