"""Fan-out of committed messages: who gets which event (DESIGN.md, "A message's way", step 5).

A new message goes to every member's inbox: all their devices, the sender's other devices
included, but not the device that sent it. That device gets the ``ack`` instead, which
carries what the server added (``message_id``, ``seq``, ``created_at``) to the text it
already holds: echoing the message back would cost a second delivery of up to 400 KB per
send. A message stored before (a device's resend, or in a cluster the accepted stream's
redelivery after a persister died) goes out again in full, the ``ack`` with the original ids:
a persister killed between its commit and its fan-out left the members without the message,
and nothing else would tell a connected device that the conversation's tail is missing (a
``seq`` gap only shows at the next message). Devices merge by ``seq``, so a second copy of a
message they hold changes nothing.

Each event is encoded once per message, whatever the number of recipients; the MQTT
server encodes each PUBLISH once too. In a cluster each event crosses NATS once per
recipient user (``hubbub.inbox.<uid>``), to the broker nodes holding that user's devices.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from hubbub.connections import Inboxes
from hubbub.envelope import CommitResult
from hubbub.events import delivery_events

__all__ = ["Members", "fan_out"]

Members = Callable[[int], Awaitable[frozenset[int] | None]]


async def fan_out(results: Sequence[CommitResult], members: Members, inboxes: Inboxes) -> None:
    """Deliver the events of ``results``, in commit order (members looked up once per conversation).

    ``inboxes`` is the MQTT server on one node, or the NATS publisher in a persister of a cluster.
    """
    rosters = {
        cid: await members(cid) or frozenset()
        for cid in {result.message.conversation_id for result in results}
    }
    to_inbox = inboxes.to_inbox
    for result in results:
        message = result.message
        sender, device = message.sender_id, result.sender_device_id
        payload, ack = delivery_events(message)
        for user_id in rosters[message.conversation_id]:
            to_inbox(user_id, payload, skip_device=device if user_id == sender else None)
        to_inbox(sender, ack, only_device=device)
