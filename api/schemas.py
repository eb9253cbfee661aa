"""Request and response bodies of the REST API. Every id crosses the wire as a string."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "BrokerEndpoint",
    "BrokerList",
    "ConversationList",
    "ConversationOut",
    "ConversationSync",
    "ConversationUpdate",
    "CursorMove",
    "DeviceList",
    "DeviceOut",
    "DirectCreate",
    "GroupCreate",
    "MemberAdd",
    "MemberOut",
    "MessageOut",
    "MessagePageOut",
    "MissingRange",
    "ProfileUpdate",
    "ReadMarker",
    "ReadState",
    "RefreshRequest",
    "SendBody",
    "SignUp",
    "SyncOut",
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
    """Credentials for one device: the access token is also its MQTT password, on any broker node.

    ``mqtt`` is where to connect now; ``brokers`` every live broker node, least loaded first
    (``mqtt`` is the first): the device keeps the list and, when its node goes away, connects
    to the next one with the access token it holds, asking ``GET /v1/brokers`` only once every
    listed node has failed. Nothing to rotate: a failover costs no refresh.
    """

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth 2 token type, not a secret
    expires_in: int
    user_id: str
    device_id: str
    mqtt: BrokerEndpoint
    brokers: list[BrokerEndpoint]


class BrokerList(BaseModel):
    """``GET /v1/brokers``: the live broker nodes, least loaded first, as of ``max_age_s`` ago at most."""

    brokers: list[BrokerEndpoint]
    max_age_s: float


class DeviceOut(BaseModel):
    """One signed-in device of mine; ``current`` is the one asking."""

    id: str
    name: str
    created_at: str
    last_login_at: str
    current: bool


class DeviceList(BaseModel):
    """``GET /v1/devices``: my signed-in devices, most recently logged in first."""

    devices: list[DeviceOut]


IdStr = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,18}$")]
Cmid = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Title = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]


class DirectCreate(_Strict):
    """``POST /v1/conversations`` for the 1:1 chat with ``user_id``."""

    type: Literal["direct"]
    user_id: IdStr


class GroupCreate(_Strict):
    """``POST /v1/conversations`` for a group (the creator is a member and its admin)."""

    type: Literal["group"]
    title: Title
    member_ids: list[IdStr] = Field(default_factory=list, max_length=10_000)


class ConversationUpdate(_Strict):
    """``PATCH /v1/conversations/{cid}``."""

    title: Title


class MemberAdd(_Strict):
    """``POST /v1/conversations/{cid}/members``."""

    user_id: IdStr


class MemberOut(BaseModel):
    """A member as listed in a conversation."""

    user_id: str
    username: str
    display_name: str
    role: Literal["admin", "member"]


class MessageOut(BaseModel):
    """A committed message (the same shape as the ``message`` inbox event, without ``kind``)."""

    conversation_id: str
    message_id: str
    seq: int
    sender_id: str
    cmid: str
    text: str
    created_at: str


class ConversationOut(BaseModel):
    """A conversation as its members see it."""

    id: str
    type: Literal["direct", "group"]
    title: str | None
    members: list[MemberOut]
    created_at: str
    last_message: MessageOut | None = None
    unread_count: int = 0
    last_read_seq: int = 0


class ConversationList(BaseModel):
    """``GET /v1/conversations``: most recently active first."""

    conversations: list[ConversationOut]


class SendBody(_Strict):
    """``POST /v1/conversations/{cid}/messages``: the same ``{cmid, text}`` as over MQTT."""

    cmid: Cmid
    text: str


class MessagePageOut(BaseModel):
    """A page of history in ascending ``seq``; ``has_more`` in the direction paged."""

    messages: list[MessageOut]
    has_more: bool


class ReadMarker(_Strict):
    """``POST /v1/conversations/{cid}/read``: everything up to ``seq`` is read."""

    seq: int = Field(ge=0)


class ReadState(BaseModel):
    """The caller's read marker and what is still unread."""

    last_read_seq: int
    unread_count: int


class MissingRange(BaseModel):
    """History a sync page could not include: seqs ``after`` < seq <= ``up_to``."""

    after: int
    up_to: int


class ConversationSync(BaseModel):
    """What one conversation has past the device's cursor."""

    conversation_id: str
    cursor: int
    latest_seq: int
    messages: list[MessageOut]
    complete: bool
    missing: MissingRange | None = None


class SyncOut(BaseModel):
    """``GET /v1/sync``: every conversation that moved past this device's cursor."""

    conversations: list[ConversationSync]


class CursorMove(_Strict):
    """``POST /v1/sync/cursors``: the device holds everything up to these seqs."""

    cursors: dict[IdStr, Annotated[int, Field(ge=0)]] = Field(max_length=10_000)
