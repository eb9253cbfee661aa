"""The one seam every push provider sits behind, and the outcome vocabulary they answer in.

Outcomes are sorted the way Sygnal sorts them, because the dispatcher's reaction depends only on
the class, never on the provider: ``delivered`` (count it), ``token_rejected`` (the token is dead
for good: remove it), ``retry_later`` (transient: back off, honouring ``retry_after``) and
``permanent_failure`` (this push can never succeed as sent: count it, log it, do not retry).

A provider never raises for a push that failed: every failure, transport errors included, comes
back as an outcome, so one bad token or one dead endpoint cannot unwind the dispatcher.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

from hubbub.stores import PushToken

__all__ = [
    "Notification",
    "OutcomeKind",
    "PushOutcome",
    "PushProvider",
]


@dataclass(frozen=True, slots=True)
class Notification:
    """One push to one token, with its text already fitted to the provider's payload limit.

    ``thread_id`` is the conversation id: APNs thread-id and collapse id, FCM collapse key and
    notification tag, Web Push ``Topic``, so a newer push for a conversation replaces the older
    one on the device. ``data`` carries the ids as strings (64-bit ids do not fit JavaScript
    numbers) and ``seq`` as a number, as in every other JSON Hubbub emits.
    """

    token: PushToken
    title: str = field(repr=False)
    body: str = field(repr=False)
    thread_id: str
    badge: int
    data: Mapping[str, str | int] = field(hash=False)

    @property
    def message_id(self) -> str:
        """The pushed message's id, for logs and for the delivery log."""
        return str(self.data.get("message_id", ""))


class OutcomeKind(enum.Enum):
    """What the dispatcher should do about one attempt."""

    DELIVERED = "delivered"
    TOKEN_REJECTED = "token_rejected"  # noqa: S105 - an outcome's name, not a secret
    RETRY_LATER = "retry_later"
    PERMANENT_FAILURE = "permanent_failure"


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """The result of one attempt.

    ``reason`` is the provider's own word (``BadDeviceToken``, ``UNREGISTERED``, ``http_503``,
    ``timeout``), ``status`` the HTTP status when there was one.
    """

    kind: OutcomeKind
    reason: str = ""
    status: int | None = None
    retry_after: float | None = None

    @classmethod
    def delivered(cls, status: int | None = None) -> PushOutcome:
        """The provider accepted the push."""
        return cls(OutcomeKind.DELIVERED, "ok", status)

    @classmethod
    def token_rejected(cls, reason: str, status: int | None = None) -> PushOutcome:
        """The token will never work again: the caller should forget it."""
        return cls(OutcomeKind.TOKEN_REJECTED, reason, status)

    @classmethod
    def retry_later(
        cls, reason: str, status: int | None = None, retry_after: float | None = None
    ) -> PushOutcome:
        """A transient failure; ``retry_after`` is the provider's minimum wait, when it gave one."""
        return cls(OutcomeKind.RETRY_LATER, reason, status, retry_after)

    @classmethod
    def permanent_failure(cls, reason: str, status: int | None = None) -> PushOutcome:
        """This push cannot succeed as sent (bad payload, bad configuration)."""
        return cls(OutcomeKind.PERMANENT_FAILURE, reason, status)


class PushProvider(ABC):
    """A push service (APNs, FCM, Web Push, a webhook, the log).

    ``render`` returns the exact bytes whose size the provider's limit applies to (for Web Push,
    the plaintext before encryption); the dispatcher truncates text until ``render`` fits
    ``max_payload_bytes``, so a provider's ``send`` only ever refuses an oversized payload when
    even an empty body cannot fit.
    """

    max_payload_bytes: int = 4096

    @property
    @abstractmethod
    def name(self) -> str:
        """The provider's name, as in ``PushToken.provider`` and the metrics' labels."""

    @abstractmethod
    def render(self, notification: Notification) -> bytes:
        """The payload this provider would send for ``notification``."""

    @abstractmethod
    async def send(self, notification: Notification) -> PushOutcome:
        """Attempt one push; never raises for a failed push, answers an outcome instead."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; the provider is not used afterwards."""

    def oversized(self, payload: bytes) -> PushOutcome | None:
        """A permanent failure when ``payload`` exceeds the provider's limit, else ``None``."""
        if len(payload) > self.max_payload_bytes:
            return PushOutcome.permanent_failure("payload_too_large")
        return None
