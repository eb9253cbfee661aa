"""Request and response bodies of the REST API. Every id crosses the wire as a string."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "BrokerEndpoint",
    "ProfileUpdate",
    "RefreshRequest",
    "SignUp",
    "TokenRequest",
    "TokenResponse",
    "UserOut",
]

Username = Annotated[
    str, StringConstraints(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$", strip_whitespace=True)
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]
DisplayName = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]
DeviceName = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]
DeviceId = Annotated[str, StringConstraints(min_length=1, max_length=24, pattern=r"^[0-9]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignUp(_Strict):
    """``POST /v1/users``."""

    username: Username
    password: Password
    display_name: DisplayName | None = None


class UserOut(BaseModel):
    """A user as others see it."""

    id: str
    username: str
    display_name: str


class ProfileUpdate(_Strict):
    """``PATCH /v1/users/me``: a new display name and/or password (the current one required)."""

    display_name: DisplayName | None = None
    password: Password | None = None
    current_password: str | None = Field(None, max_length=128)


class TokenRequest(_Strict):
    """``POST /v1/auth/token``: without ``device_id`` the login registers a new device."""

    username: Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    device_name: DeviceName | None = None
    device_id: DeviceId | None = None


class RefreshRequest(_Strict):
    """``POST /v1/auth/refresh``."""

    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class BrokerEndpoint(BaseModel):
    """Where a device connects: MQTT over TCP, or over WebSocket for browsers."""

    host: str
    port: int
    ws_url: str


class TokenResponse(BaseModel):
    """Credentials for one device: the access token is also its MQTT password."""

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth 2 token type, not a secret
    expires_in: int
    user_id: str
    device_id: str
    mqtt: BrokerEndpoint
