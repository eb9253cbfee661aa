"""A broker node's presence in a cluster: report devices, answer resyncs, keep retained topics.

``NodePresence`` is the ``hubbub.presence.PresenceService`` a broker node's messaging core
uses when ``HUBBUB_NATS_URL`` is set. It decides nothing (the shard writers do,
``cluster.presence_writer``); it

- reports each device connect/disconnect of this node to the writer of the user's shard
  (``hubbub.presence.events.<shard>``, core NATS) as a ``DeviceChange`` numbered per shard, in
  order through one outbox task (publishing never waits on the MQTT server's path);
- answers the writers' resync requests (``hubbub.presence.resync.<shard>``) with the devices
  of the shard it holds now and the number of its last change (``NodeDevices``);
- applies the writers' decisions, followed by the ``PresenceMirror``, to its MQTT server's
  retained ``presence/{uid}`` (``DeviceConnections.set_presence``) — only for users whose
  topic this node already retains. A topic gets retained here when a device subscribes to it
  with nothing retained (the MQTT server asks ``snapshot``, and keeps the answer): so the node
  holds the presence of the users its devices watch, not of the whole cluster.
- answers ``online`` from the mirror (everyone in the cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Collection

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from cluster.connection import ClusterConnection
from cluster.presence_mirror import PresenceMirror
from hubbub import cancelling, subjects
from hubbub.connections import DeviceConnections
from hubbub.presence import DeviceChange, NodeDevices
from hubbub.shards import ShardMap

__all__ = ["NodePresence"]

logger = logging.getLogger(__name__)

_TRANSIENT = (NatsError, TimeoutError, OSError)
_CLOSE_FLUSH_S = 2.0


class NodePresence:
    """This broker node's devices, told to the shard writers; their decisions, kept in its topics."""

    def __init__(
        self,
        conn: ClusterConnection,
        *,
        node_id: str,
        shards: ShardMap,
        connections: DeviceConnections,
        mirror: PresenceMirror,
    ) -> None:
        self._conn = conn
        self.node_id = node_id
        self.boot = secrets.token_hex(6)  # this incarnation: a restart under the same id is a new one
        self._shards = shards
        self._connections = connections
        self._mirror = mirror
        self._held: dict[int, set[tuple[int, str]]] = {}
        self._seq: dict[int, int] = {}
        # The users whose topic this node retains, each with the last decision seen for it. A
        # decision reaches the mirror's subscription as it is published, before the bucket's
        # leader has stored it: a read of the bucket just after can still answer the one before.
        self._retained: dict[int, bytes | None] = {}
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None
        self._closed = False
        self.reported = 0  # changes published (for /metrics and tests)
        mirror.listen(self._changed)

    # --- PresenceReports: what this node's messaging core reports ------------------------------

    def device_connected(self, user_id: int, device_id: str) -> None:
        """A device of ``user_id`` completed CONNECT here: tell the shard's writer."""
        shard = self._shards.user(user_id)
        self._held.setdefault(shard, set()).add((user_id, device_id))
        self._report(shard, user_id, device_id, connected=True)

    def device_disconnected(self, user_id: int, device_id: str) -> None:
        """A connection here ended (unless a newer one of the same device took over): tell the writer."""
        if self._connections.is_connected(device_id):
            return
        shard = self._shards.user(user_id)
        held = self._held.get(shard, set())
        if (user_id, device_id) in held:
            held.discard((user_id, device_id))
            self._report(shard, user_id, device_id, connected=False)

    # --- PresenceReader ------------------------------------------------------------------------

    def online(self, user_ids: Collection[int]) -> set[int]:
        """Users among ``user_ids`` online anywhere in the cluster (the mirror)."""
        return self._mirror.online(user_ids)

    async def snapshot(self, user_id: int) -> bytes:
        """The payload a ``presence/{user_id}`` topic starts from here; its later changes follow."""
        self._retained.setdefault(user_id, None)  # first: a change arriving during the read is kept
        stored = await self._mirror.snapshot(user_id)
        seen = self._retained[user_id]
        return stored if seen is None else seen

    # --- running -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Answer resyncs and start sending reports (fails if NATS does not take the subscription)."""
        if self._sender is not None:
            raise RuntimeError("node presence already started")
        self._subscription = await self._conn.client.subscribe(
            subjects.every_presence_resync(), cb=self._resync
        )
        self._sender = asyncio.create_task(self._send(), name="presence-reports")

    async def close(self) -> None:
        """Stop reporting (what is queued goes out, briefly) and answering. Idempotent."""
        if self._closed:
            return
        self._closed = True
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(*_TRANSIENT):
                await subscription.unsubscribe()
        sender, self._sender = self._sender, None
        if sender is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_FLUSH_S):
                    await self._outbox.join()
            await cancelling.stop(sender)

    @property
    def running(self) -> bool:
        """The report sender is alive (for /healthz)."""
        return self._sender is not None and not self._sender.done()

    # --- internals -----------------------------------------------------------------------------

    def _report(self, shard: int, user_id: int, device_id: str, *, connected: bool) -> None:
        if self._closed:
            return
        seq = self._seq.get(shard, 0) + 1
        self._seq[shard] = seq
        change = DeviceChange(self.node_id, self.boot, seq, user_id, device_id, connected)
        self._outbox.put_nowait((subjects.presence_events(shard), change.to_json()))

    async def _send(self) -> None:
        client = self._conn.client
        while True:
            subject, data = await self._outbox.get()
            try:
                await client.publish(subject, data)
                self.reported += 1
            except _TRANSIENT as exc:  # the writer finds the gap by seq and asks again
                logger.warning("presence report on %s not sent (%r)", subject, exc)
            finally:
                self._outbox.task_done()

    async def _resync(self, msg: Msg) -> None:
        asked = (msg.headers or {}).get(subjects.PRESENCE_NODE)
        if asked not in {None, self.node_id} or not msg.reply:
            return
        try:
            shard = subjects.parse_shard(msg.subject)
        except ValueError:
            return
        devices = tuple(sorted(self._held.get(shard, ())))
        answer = NodeDevices(self.node_id, self.boot, self._seq.get(shard, 0), devices)
        try:
            await msg.respond(answer.to_json())
        except _TRANSIENT as exc:
            logger.warning("presence resync of shard %d not answered (%r)", shard, exc)

    def _changed(self, user_id: int, payload: bytes) -> None:
        if user_id in self._retained:
            self._retained[user_id] = payload
            self._connections.set_presence(user_id, payload)
