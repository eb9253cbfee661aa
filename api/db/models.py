"""Tables of the account store. Times are Unix milliseconds; ids are Snowflakes."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "Conversation",
    "Device",
    "DeviceCursor",
    "FriendRequest",
    "Friendship",
    "Member",
    "PushRegistration",
    "RefreshToken",
    "RetiredRefreshToken",
    "User",
]


class Base(DeclarativeBase):
    """Declarative base of every account table."""


class User(Base):
    """An account. ``username`` is stored lower-cased, so uniqueness ignores case."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    display_name: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[int] = mapped_column(BigInteger)
    last_active_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Device(Base):
    """One login of a user: the MQTT client id its tokens are bound to."""

    __tablename__ = "devices"
    __table_args__ = (Index("ix_devices_user_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    last_login_at: Mapped[int] = mapped_column(BigInteger)


class RefreshToken(Base):
    """The one live refresh token of a device, kept only as a SHA-256 digest."""

    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(
        String(24), ForeignKey("devices.id", ondelete="CASCADE"), unique=True
    )
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    expires_at: Mapped[int] = mapped_column(BigInteger)


class RetiredRefreshToken(Base):
    """A refresh token rotated out by a refresh, kept (as its digest) until it would have expired.

    Only its reuse is interesting: it means the token was copied, so the device is ended.
    """

    __tablename__ = "retired_refresh_tokens"
    __table_args__ = (Index("ix_retired_refresh_tokens_device_id", "device_id"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(24), ForeignKey("devices.id", ondelete="CASCADE"))
    expires_at: Mapped[int] = mapped_column(BigInteger)


class Conversation(Base):
    """A 1:1 (``direct``) or group conversation. ``direct_key`` makes the pair's chat unique."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(8))
    title: Mapped[str | None] = mapped_column(String(128), nullable=True)
    direct_key: Mapped[str | None] = mapped_column(String(41), unique=True, nullable=True)
    created_by: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)


class Member(Base):
    """A user in a conversation, with its role and read marker."""

    __tablename__ = "members"
    __table_args__ = (Index("ix_members_user_id", "user_id"),)

    conversation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(8))
    joined_at: Mapped[int] = mapped_column(BigInteger)
    last_read_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    muted: Mapped[bool] = mapped_column(Boolean, default=False)


class DeviceCursor(Base):
    """How far a device holds a conversation's history: catch-up starts after ``seq``."""

    __tablename__ = "device_cursors"

    device_id: Mapped[str] = mapped_column(
        String(24), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    conversation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger)


class Friendship(Base):
    """One direction of an accepted friendship; both directions are stored."""

    __tablename__ = "friends"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    friend_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[int] = mapped_column(BigInteger)


class FriendRequest(Base):
    """A pending request from ``from_id`` to ``to_id``."""

    __tablename__ = "friend_requests"
    __table_args__ = (Index("ix_friend_requests_to_id", "to_id"),)

    from_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    to_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[int] = mapped_column(BigInteger)


class PushRegistration(Base):
    """A device's push token (one per device).

    A token the push service rejected leaves ``rejected_at`` set, so the device is told to
    register again.
    """

    __tablename__ = "push_registrations"
    __table_args__ = (Index("ix_push_registrations_user_id", "user_id"),)

    device_id: Mapped[str] = mapped_column(
        String(24), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(16))
    token: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    rejected_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
