"""After its own NATS connection comes back, a broker node checks its devices' sign-ins again.

A device signed out (logged out, ended from the device list, its password changed elsewhere) is
removed from the account store, then ``hubbub.device.ended`` tells every broker node to close its
connection (``cluster.node_inbox``). That subject is core NATS: while the node's connection is
down the event goes nowhere, and the device would stay connected here, and the node's remembered
sign-ins (``hubbub.sessions.SignedInDevices``) would let its token in again, for as long as they
are kept. So on every reconnect the node forgets what it remembered (at once, in the reconnect's
callback: a CONNECT from then on asks the store), and a round then asks the store about every
device connected here, ending those it no longer holds as the event would have
(``LiveConnections.end_device``, with the reason ``ended``: the real one went with the event).

When. The round begins ``settle_s`` after the reconnect, like the inbox resync's
(``cluster.inbox_resync``): an end published through another NATS server before it learnt the
node's subscriptions again is lost as well, and the round, which forgets the remembered sign-ins
once more as it begins, sees it.

Pace. The store answers each slice before the next is asked: ``rate`` devices a second at most
(the resync's ``HUBBUB_RESYNC_USERS_PER_SECOND``), in slices every ``tick_s``; the store batches
a slice's questions (``SqlDeviceSessions``: one SELECT per batch), so a node with 100,000 devices
costs it 100,000 / rate seconds of light reads, not one burst. The round does not need NATS, so a
disconnect does not cut it; reconnects during a round make one more round after it, not one each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from cluster.connection import ConnectionState
from cluster.reconnect_rounds import RECONNECT_SETTLE_S, RECONNECT_TICK_S, Pause, ReconnectRounds
from hubbub.sessions import DeviceEnded, DeviceSessions, LiveConnections

__all__ = ["SessionRecheck"]

logger = logging.getLogger(__name__)

Devices = Callable[[], Iterable[tuple[int, str]]]  # (user id, device id) of each device connected here


class SessionRecheck(ReconnectRounds):
    """Ends the devices here whose sign-in ended while the node's NATS connection was down."""

    def __init__(
        self,
        state: ConnectionState,
        devices: Devices,
        sessions: DeviceSessions,
        forget_all: Callable[[], None],
        live: LiveConnections,
        *,
        rate: float,
        settle_s: float = RECONNECT_SETTLE_S,
        tick_s: float = RECONNECT_TICK_S,
        pause: Pause = asyncio.sleep,
    ) -> None:
        """``sessions`` answers whether a device is signed in; ``forget_all`` forgets its memory.

        (Both are the node's ``SignedInDevices``: forgotten, it asks the store, and remembers the
        fresh answers for the devices' next CONNECTs.) ``live`` closes an ended device's
        connection here. ``rate``: devices checked per second.
        """
        super().__init__(
            state, name="session-recheck", rate=rate, settle_s=settle_s, tick_s=tick_s, pause=pause
        )
        self._devices = devices
        self._sessions = sessions
        self._forget_all = forget_all
        self._live = live
        self.checked = 0  # devices asked about
        self.ended = 0  # devices found signed out, and closed

    def start(self) -> None:
        """Follow the connection from now on; each reconnect forgets the sign-ins in its callback."""
        super().start()
        self._state.on_reconnect(self._forget_all)

    async def _round(self) -> None:
        await self._pause(self._settle_s)
        self._forget_all()
        devices = list(self._devices())
        logger.info("NATS reconnected: checking the sign-in of %d devices", len(devices))
        per_tick = self._per_tick
        for start in range(0, len(devices), per_tick):
            if start:
                await self._pause(self._tick_s)
            await self._check(devices[start : start + per_tick])
        logger.info("session recheck round %d done: %d devices ended in all", self.rounds, self.ended)

    async def _check(self, devices: list[tuple[int, str]]) -> None:
        """Ask about one slice together; end those the store no longer holds."""
        asked = self._sessions.is_signed_in
        answers = await asyncio.gather(
            *(asked(user, device) for user, device in devices), return_exceptions=True
        )
        self.checked += len(devices)
        for (user_id, device_id), answer in zip(devices, answers, strict=True):
            if isinstance(answer, BaseException):
                # The device stays: the store is unreachable, and it will be asked at the next CONNECT.
                logger.warning("sign-in of device_id=%s not checked: %r", device_id, answer)
            elif not answer:
                self.ended += 1
                await self._live.end_device(DeviceEnded(user_id, device_id, "ended"))
