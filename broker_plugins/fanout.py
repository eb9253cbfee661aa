"""Fan-out of committed messages: who gets which event (DESIGN.md, "A message's way", step 5).

A new message goes to every member's inbox (all their devices, the sender's other devices
included) and its ``ack`` to the sender's devices. A resend of a message stored before is
answered with the original ``ack`` only: the others had it, or catch up through sync.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from hubbub import topics
from hubbub.envelope import CommitResult, ack_event, message_event

__all__ = ["Deliver", "fan_out"]

Deliver = Callable[[str, bytes], None]
Members = Callable[[int], Awaitable[frozenset[int] | None]]


async def fan_out(results: Sequence[CommitResult], members: Members, deliver: Deliver) -> None:
    """Deliver the events of ``results``, in commit order."""
    for result in results:
        message = result.message
        if not result.duplicate:
            payload = message_event(message)
            for user_id in await members(message.conversation_id) or ():
                deliver(topics.inbox(user_id), payload)
        deliver(topics.inbox(message.sender_id), ack_event(message))
