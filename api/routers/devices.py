"""One's own devices: listing and ending them, push registration, the VAPID key, muting.

Ending a device (``DELETE /v1/devices/{id}``) signs it out exactly as its own logout would:
its tokens are refused at once and its live connections closed.
"""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from api.db.models import PushRegistration
from api.deps import CurrentDevice, CurrentUser, SessionDep, StateDep
from api.schemas import DeviceList, DeviceOut
from api.signout import end_devices
from api.store import accounts
from api.views import require_membership
from hubbub.envelope import format_time
from hubbub.errors import NotFound

__all__ = ["router"]

router = APIRouter(tags=["devices"])


class WebPushKeys(BaseModel):
    """The browser's public key and auth secret (base64url)."""

    model_config = ConfigDict(extra="forbid")

    p256dh: Annotated[str, StringConstraints(min_length=20, max_length=200)]
    auth: Annotated[str, StringConstraints(min_length=8, max_length=100)]


class WebPushSubscription(BaseModel):
    """A ``PushSubscription`` as the browser's ``toJSON()`` gives it."""

    model_config = ConfigDict(extra="ignore")

    endpoint: Annotated[str, StringConstraints(pattern=r"^https://[^\s]+$", max_length=2048)]
    keys: WebPushKeys


class PushRegistrationIn(BaseModel):
    """``PUT /v1/devices/{device_id}/push``: an APNs/FCM token, or a Web Push subscription."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["apns", "fcm", "webpush"]
    token: (
        Annotated[str, StringConstraints(min_length=8, max_length=4096, pattern=r"^[A-Za-z0-9_:.\-]+$")]
        | None
    ) = None
    subscription: WebPushSubscription | None = None

    @model_validator(mode="after")
    def _one_address(self) -> PushRegistrationIn:
        if (self.provider == "webpush") != (self.subscription is not None) or (
            self.provider != "webpush" and self.token is None
        ):
            raise ValueError("apns and fcm need `token`; webpush needs `subscription` (and no token)")
        return self


class PushRegistrationOut(BaseModel):
    """Where a device's push registration stands: ``register_again`` after the service rejected it."""

    provider: str | None
    registered: bool
    register_again: bool


class MuteIn(BaseModel):
    """``PUT /v1/conversations/{cid}/mute``."""

    model_config = ConfigDict(extra="forbid")

    muted: bool = Field(description="No pushes for this conversation while true.")


async def _my_device(session: SessionDep, device_id: str, user_id: int) -> str:
    device = await accounts.find_device(session, device_id)
    if device is None or device.user_id != user_id:
        raise NotFound("no such device of yours")
    return device.id


def _out(registration: PushRegistration | None) -> PushRegistrationOut:
    if registration is None:
        return PushRegistrationOut(provider=None, registered=False, register_again=False)
    return PushRegistrationOut(
        provider=registration.provider,
        registered=registration.token is not None,
        register_again=registration.rejected_at is not None,
    )


@router.get("/v1/devices")
async def list_devices(device: CurrentDevice, session: SessionDep) -> DeviceList:
    """My signed-in devices."""
    return DeviceList(
        devices=[
            DeviceOut(
                id=mine.id,
                name=mine.name,
                created_at=format_time(mine.created_at),
                last_login_at=format_time(mine.last_login_at),
                current=mine.id == device.device_id,
            )
            for mine in await accounts.devices_of(session, device.user_id)
        ]
    )


@router.delete("/v1/devices/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
async def end_device(device_id: str, user: CurrentUser, state: StateDep, session: SessionDep) -> None:
    """Sign one of my devices out (this one too, if it is the one asking); 404 if it is not mine."""
    if not await end_devices(state, session, user.id, [device_id], "ended"):
        raise NotFound("no such device of yours")


@router.put("/v1/devices/{device_id}/push")
async def register(
    device_id: str, body: PushRegistrationIn, user: CurrentUser, state: StateDep, session: SessionDep
) -> PushRegistrationOut:
    """Register (or replace) this device's push token."""
    device = await _my_device(session, device_id, user.id)
    token = body.token if body.subscription is None else orjson.dumps(body.subscription.model_dump()).decode()
    registration = await session.get(PushRegistration, device)
    if registration is None:
        registration = PushRegistration(device_id=device, user_id=user.id, created_at=state.clock_ms())
        session.add(registration)
    registration.provider = body.provider
    registration.token = token
    registration.rejected_at = None
    return _out(registration)


@router.get("/v1/devices/{device_id}/push")
async def registration(device_id: str, user: CurrentUser, session: SessionDep) -> PushRegistrationOut:
    """This device's registration, and whether it must register again."""
    device = await _my_device(session, device_id, user.id)
    return _out(await session.get(PushRegistration, device))


@router.delete("/v1/devices/{device_id}/push", status_code=status.HTTP_204_NO_CONTENT)
async def unregister(device_id: str, user: CurrentUser, session: SessionDep) -> None:
    """Stop pushing to this device."""
    device = await _my_device(session, device_id, user.id)
    registration = await session.get(PushRegistration, device)
    if registration is not None:
        await session.delete(registration)


@router.get("/v1/push/vapid-public-key")
async def vapid_public_key(state: StateDep) -> dict[str, str]:
    """The application server key browsers pass to ``pushManager.subscribe``."""
    if state.vapid_public_key is None:
        raise NotFound("Web Push is not configured")
    return {"public_key": state.vapid_public_key}


@router.put("/v1/conversations/{conversation_id}/mute")
async def mute(conversation_id: str, body: MuteIn, user: CurrentUser, session: SessionDep) -> MuteIn:
    """Mute or unmute pushes for one of my conversations."""
    member = await require_membership(session, conversation_id, user.id)
    member.muted = body.muted
    return MuteIn(muted=member.muted)
