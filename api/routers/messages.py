"""History and sending over REST: paging by ``seq``, and a send through the broker's ingest."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.deps import CurrentDevice, CurrentUser, SessionDep, StateDep
from api.schemas import MessageOut, MessagePageOut, SendBody
from api.views import message_out, require_membership
from hubbub.envelope import SendRequest, validate_text
from hubbub.errors import InvalidInput, MessageRejected, RateLimited

__all__ = ["router"]

router = APIRouter(prefix="/v1/conversations", tags=["messages"])

SeqQuery = Annotated[int | None, Query(ge=0)]


@router.get("/{conversation_id}/messages")
async def history(
    conversation_id: str,
    *,
    user: CurrentUser,
    state: StateDep,
    session: SessionDep,
    before: SeqQuery = None,
    after: SeqQuery = None,
    around: SeqQuery = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> MessagePageOut:
    """A page of history in ascending seq: the newest, or before/after/around a seq.

    Give at most one of ``before``, ``after`` and ``around`` (422 ``invalid`` otherwise).
    """
    if sum(anchor is not None for anchor in (before, after, around)) > 1:
        raise InvalidInput("give at most one of before, after, around", code="invalid")
    member = await require_membership(session, conversation_id, user.id)
    page = await state.messages.page(
        member.conversation_id, limit=limit, before=before, after=after, around=around
    )
    return MessagePageOut(
        messages=[message_out(message) for message in page.messages], has_more=page.has_more
    )


@router.post(
    "/{conversation_id}/messages",
    status_code=status.HTTP_201_CREATED,
    responses={
        status.HTTP_200_OK: {
            "model": MessageOut,
            "description": "A resend of a cmid stored before: the original message, stored once.",
        }
    },
)
async def send(
    conversation_id: str,
    body: SendBody,
    *,
    user: CurrentUser,
    device: CurrentDevice,
    state: StateDep,
    session: SessionDep,
    response: Response,
) -> MessageOut:
    """Send as the caller, exactly as over MQTT; 200 with the original for a repeated cmid."""
    member = await require_membership(session, conversation_id, user.id)
    try:
        text = validate_text(body.text, state.settings.max_message_chars)
        result = await state.submitter.submit(
            member.conversation_id, user.id, device.device_id, SendRequest(cmid=body.cmid, text=text)
        )
    except MessageRejected as rejection:
        if rejection.code == "rate_limited":
            raise RateLimited(rejection.message, retry_after=1) from rejection
        raise InvalidInput(rejection.message, code=rejection.code) from rejection
    if result.duplicate:
        response.status_code = status.HTTP_200_OK
    return message_out(result.message)
