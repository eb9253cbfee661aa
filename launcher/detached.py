"""What the API uses for messaging when the messaging core runs in another process (`hubbub api`).

Conversation events and REST sends need the core's ingest and fan-out; across processes
they will travel over the cross-node hand-off (NATS, DESIGN.md "Scaling out"), which is
not built yet. Until then the API says so: sends get 503, the skipped events are
logged (devices still see every change through REST and sync), and presence lookups
report everyone offline with their stored last activity.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable

from hubbub.envelope import CommitResult, SendRequest
from hubbub.errors import Unavailable
from hubbub.sessions import DeviceEnded

__all__ = ["BrokerElsewhere"]

logger = logging.getLogger(__name__)


class BrokerElsewhere:
    """What the API needs of the messaging core (publish, submit, presence, end devices) run apart."""

    async def publish(self, user_ids: Iterable[int], payload: bytes) -> None:
        """Skip the event, saying so: the broker is not in this process."""
        del payload
        logger.warning("no broker in this process: event for %d users not delivered", len(list(user_ids)))

    def membership_changed(self, conversation_id: int) -> None:
        """Nothing cached here; the core's cache expires on its own."""
        del conversation_id

    async def end_device(self, ended: DeviceEnded) -> None:
        """Nothing to close here; the broker refuses the ended device at its next CONNECT."""
        logger.warning(
            "no broker in this process: device_id=%s ended, not disconnected here", ended.device_id
        )

    def online(self, user_ids: Collection[int]) -> set[int]:
        """Unknown here: the core knows who is connected; everyone reads as offline."""
        del user_ids
        return set()

    async def submit(
        self, conversation_id: int, sender_id: int, device_id: str, request: SendRequest
    ) -> CommitResult:
        """Refuse: sending over REST needs `hubbub up` (or the cross-node hand-off)."""
        del conversation_id, sender_id, device_id, request
        raise Unavailable(
            "sending over REST needs the broker in this process (`hubbub up`)", code="broker_unavailable"
        )
