"""Catch-up for a device: everything past its lasting cursors, with explicit completeness.

A device that was offline asks once; for every conversation whose history moved past
its cursor it gets the messages after it (up to ``limit``) and ``complete``, or the range
still missing — so a client never silently skips a gap. It then moves its cursors
forward by saying what it holds.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Response, status

from api.deps import CurrentDevice, CurrentUser, SessionDep, StateDep, VerifiedToken, signed_out
from api.schemas import CursorMove, SyncOut
from api.store import conversations as queries
from hubbub.events import message_json

__all__ = ["router"]

router = APIRouter(prefix="/v1/sync", tags=["sync"])


@router.get("", response_model=SyncOut)
async def sync(
    claims: VerifiedToken,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    """For each of my conversations past this device's cursor: the messages after it.

    Every device of a failed broker node asks this at once on reconnecting elsewhere, so it
    costs the account store one read in autocommit (the device still signed in, its user's
    conversations and its cursors, together) and history one more (``MessageStore.catch_up``:
    the newest seqs and the pages after the moved cursors), each straight on the driver where
    it can (``state.reads``; a read is run again if the server had closed its connection).
    The body is ``SyncOut``, written with orjson from the messages' JSON shape
    (``message_json``, the inbox event's) rather than validated model by model: it is built
    here from typed store values.
    """
    cursors = await queries.sync_positions(state.reads, claims.device_id, claims.user_id)
    if cursors is None:
        raise signed_out()
    caught_up = await state.messages.catch_up(cursors, limit=limit)
    moved = []
    for conversation_id, cursor in cursors.items():
        past = caught_up.get(conversation_id)
        if past is None:
            continue
        newest = past.latest_seq
        held = past.messages[-1].seq if past.messages else cursor
        moved.append(
            {
                "conversation_id": str(conversation_id),
                "cursor": cursor,
                "latest_seq": newest,
                "messages": [message_json(message) for message in past.messages],
                "complete": held >= newest,
                "missing": None if held >= newest else {"after": held, "up_to": newest},
            }
        )
    return Response(orjson.dumps({"conversations": moved}), media_type="application/json")


@router.post("/cursors", status_code=status.HTTP_204_NO_CONTENT)
async def move_cursors(
    body: CursorMove, user: CurrentUser, device: CurrentDevice, state: StateDep, session: SessionDep
) -> None:
    """This device holds everything up to these seqs (cursors only move forward)."""
    mine = {conversation.id for conversation, _ in await queries.memberships(session, user.id)}
    wanted = {int(cid): seq for cid, seq in body.cursors.items() if int(cid) in mine}
    latest = await state.messages.latest_seqs(list(wanted))
    capped = {cid: min(seq, latest.get(cid, 0)) for cid, seq in wanted.items()}
    await queries.move_cursors(session, device.device_id, capped)
