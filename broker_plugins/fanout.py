"""Fan-out of committed messages: who gets which event (DESIGN.md, "A message's way", step 5).

A new message goes to every member's inbox: all their devices, the sender's other devices
included, but not the device that sent it. That device gets the ``ack`` instead, which
carries what the server added (``message_id``, ``seq``, ``created_at``) to the text it
already holds: echoing the message back would cost a second delivery of up to 400 KB per
send. A resend of a message stored before is answered with the original ``ack`` only: the
others had the message, or catch up through sync.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from hubbub import topics
from hubbub.envelope import CommitResult
from hubbub.events import ack_event, message_event

__all__ = ["Deliver", "fan_out"]

Members = Callable[[int], Awaitable[frozenset[int] | None]]


class Deliver(Protocol):
    """Publishes an event to a topic's subscribers: only ``device_id`` if given, never ``skip_device``."""

    def __call__(
        self, topic: str, payload: bytes, *, device_id: str | None = None, skip_device: str | None = None
    ) -> None:
        """Deliver ``payload``."""
        ...


async def fan_out(results: Sequence[CommitResult], members: Members, deliver: Deliver) -> None:
    """Deliver the events of ``results``, in commit order (members looked up once per conversation)."""
    rosters = {
        cid: await members(cid) or frozenset()
        for cid in {result.message.conversation_id for result in results if not result.duplicate}
    }
    for result in results:
        message = result.message
        sender, device = message.sender_id, result.sender_device_id
        if not result.duplicate:
            payload = message_event(message)
            for user_id in rosters[message.conversation_id]:
                deliver(topics.inbox(user_id), payload, skip_device=device if user_id == sender else None)
        deliver(topics.inbox(sender), ack_event(message), device_id=device)
