"""Bulk presence lookups, for lists where subscribing to each user does not suit."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from api.db.models import User
from api.deps import CurrentUser, SessionDep, StateDep
from api.store.directory import related_users
from hubbub.envelope import format_time
from hubbub.errors import InvalidInput
from hubbub.ids import parse_id

__all__ = ["router"]

router = APIRouter(prefix="/v1/presence", tags=["presence"])

MAX_LOOKUP = 100


class PresenceOut(BaseModel):
    """One user's presence, as the retained ``presence/{uid}`` topic carries it."""

    user_id: str
    status: Literal["online", "offline"]
    last_active_at: str | None


class PresenceList(BaseModel):
    """The users asked for that the caller may see (others are left out)."""

    presence: list[PresenceOut]


def _time(ms: int | None) -> str | None:
    return None if ms is None else format_time(ms)


@router.get("")
async def lookup(
    user: CurrentUser, state: StateDep, session: SessionDep, user_ids: Annotated[str, Query(min_length=1)]
) -> PresenceList:
    """Presence of up to 100 comma-separated users: myself, my friends and co-members."""
    asked = [parse_id(part.strip()) for part in user_ids.split(",")]
    wanted = list(dict.fromkeys(user_id for user_id in asked if user_id is not None))
    if len(wanted) > MAX_LOOKUP or None in asked:
        raise InvalidInput(f"give 1 to {MAX_LOOKUP} user ids, comma-separated", code="invalid")
    visible = set(await session.scalars(related_users(user.id, wanted)))  # type: ignore[call-overload]
    if user.id in wanted:
        visible.add(user.id)
    online = state.presence.online(visible)
    rows = await session.execute(select(User.id, User.last_active_at).where(User.id.in_(visible)))
    last_active = dict(rows.tuples().all())
    return PresenceList(
        presence=[
            PresenceOut(
                user_id=str(user_id),
                status="online" if user_id in online else "offline",
                last_active_at=_time(last_active[user_id]),
            )
            for user_id in wanted
            if user_id in last_active
        ]
    )
