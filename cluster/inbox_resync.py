"""After its own NATS connection comes back, a broker node tells its devices to catch up.

Committed events reach a node on core NATS (``hubbub.inbox.<uid>``, ``cluster.node_inbox``): at
most once. While the node's connection is down (its NATS server restarted, a network blip) what is
published for its users goes nowhere, and their devices, still connected to the node over MQTT,
would not know until a later message showed a ``seq`` gap or they reconnected. So after every
reconnect the node sends a ``resync`` inbox event (``hubbub.events.resync_event``) to every user it
holds (the MQTT server hands it to each of the user's devices here), and the clients catch up
through ``GET /v1/sync`` as after a reconnect of their own, deduplicating by ``seq``. Presence needs
no event: the node's ``PresenceMirror`` reads the presence bucket again on the same reconnect and
its retained ``presence/{uid}`` topics follow what changed (``cluster.presence_node``).

When. nats-py calls back on a reconnect once it has subscribed again and its PING was answered: the
node's own server has the subscriptions. The cluster's other servers learn of them over their
routes a moment later, unannounced, and an event published through one of them in that moment is
lost as well; so the round begins ``settle_s`` after the reconnect, and a device's sync, which comes
after its ``resync``, returns that event too.

Pace. A node holding 100,000 users must not send 100,000 syncs to the API in the same second
(each is a few database reads; after a NATS server restart every node that used it resyncs at
once). The node tells at most ``rate`` users a second (``HUBBUB_RESYNC_USERS_PER_SECOND``, 2,000
by default), in slices every ``tick_s``: the API's extra load is bounded by ``rate`` per node
whatever the node's size, and the last user of a big node is told ``users / rate`` seconds after
the reconnect. Pacing on the server, not a random delay in the client, because the server knows
how many it holds and every client, old or new, is paced alike.

Flapping. One round at a time, each user told once per round. A disconnect ends the round before
its next slice (a device told during the gap would sync before the gap ends); the next reconnect
adds the users held then to those still owed, behind them: the users a cut round had not reached
go first, so a link that flaps faster than a round never starves the same tail, and ten reconnects
in a moment cost each user one more sync, not ten. Users who leave before their turn are skipped;
a device that connects after the reconnect syncs on its own connect and is not told.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import Protocol

from cluster.connection import ConnectionState
from cluster.reconnect_rounds import RECONNECT_SETTLE_S, RECONNECT_TICK_S, Pause, ReconnectRounds
from hubbub.connections import Inboxes
from hubbub.events import resync_event

__all__ = ["HeldUsers", "InboxResync"]

logger = logging.getLogger(__name__)


class HeldUsers(Protocol):
    """The users whose events this node subscribes to (``cluster.node_inbox.NodeInbox``)."""

    def holds(self, user_id: int) -> bool:
        """Whether a device of ``user_id`` is connected here."""
        ...

    def held_users(self) -> Iterable[int]:
        """Every such user, in the order they came."""
        ...


class InboxResync(ReconnectRounds):
    """Sends ``resync`` to the users this node holds after each reconnect of its NATS connection."""

    def __init__(
        self,
        state: ConnectionState,
        users: HeldUsers,
        local: Inboxes,
        *,
        rate: float,
        settle_s: float = RECONNECT_SETTLE_S,
        tick_s: float = RECONNECT_TICK_S,
        pause: Pause = asyncio.sleep,
    ) -> None:
        """``local`` is the node's MQTT server (never NATS: the event is for devices here).

        ``rate``: users told per second (``HUBBUB_RESYNC_USERS_PER_SECOND``).
        """
        super().__init__(state, name="inbox-resync", rate=rate, settle_s=settle_s, tick_s=tick_s, pause=pause)
        self._users = users
        self._local = local
        self._owed: OrderedDict[int, None] = OrderedDict()
        self.told = 0  # resync events sent, one per user per round

    @property
    def owed(self) -> int:
        """Users still to be told in this round."""
        return len(self._owed)

    async def _round(self) -> None:
        for user_id in self._users.held_users():
            self._owed.setdefault(user_id)  # one still owed keeps its place, ahead of the rest
        logger.info("NATS reconnected: telling %d users to catch up", len(self._owed))
        await self._tell_owed(_Link(self._state))

    async def _tell_owed(self, link: _Link) -> None:
        """Tell what is owed, slice by slice, while the link is the one this round began on."""
        await self._pause(self._settle_s)
        owed, payload = self._owed, resync_event()
        while owed:
            if link.dropped():
                logger.info("NATS connection lost again: %d users still to tell", len(owed))
                return
            for _ in range(min(self._per_tick, len(owed))):
                user_id, _ = owed.popitem(last=False)
                if self._users.holds(user_id):
                    self._local.to_inbox(user_id, payload)
                    self.told += 1
            if owed:
                await self._pause(self._tick_s)
        logger.info("resync round %d done: %d users told in all", self.rounds, self.told)


class _Link:
    """The connection as it was when a round began: dropped once it disconnected or reconnected since."""

    __slots__ = ("_at", "_state")

    def __init__(self, state: ConnectionState) -> None:
        self._state = state
        self._at = (state.disconnects, state.reconnects)

    def dropped(self) -> bool:
        state = self._state
        return not state.connected or (state.disconnects, state.reconnects) != self._at
