"""Presence for readers in a cluster: an in-memory mirror of the presence bucket.

The shard writers (``cluster.presence_writer``) put each decision into the KV bucket
``hubbub_presence`` (key ``<shard>.<uid>``, value the retained ``presence/{uid}`` payload). A
reader — the API's bulk lookups, the push planner, a broker node — asks ``online(user_ids)``
synchronously, so the mirror keeps the set of online users in memory (only the online ones:
an int per online user), from a full read of the bucket at start and a core NATS
subscription to the bucket's writes (``$KV.<bucket>.>``: one small message per change).

Core NATS is at most once: a change lost while the connection was down would stay lost, so
the mirror reads the bucket again after every reconnect and every ``refresh_s``; changes that
arrive during a read are applied again on top of it, in their order. ``snapshot`` reads the
user's key from the stream's leader (a replica's direct get may lag a change this mirror has
already applied): the payload for a ``presence/{uid}`` topic that
holds nothing yet.

The full read lists the bucket's subjects (``cluster.kv.Bucket.latest``): right for thousands
to a few hundred thousand users; far beyond, an ordered consumer over the bucket would replace
it (at the 2.9 caveat ``cluster.kv`` describes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from cluster.connection import ClusterConnection
from cluster.kv import Bucket, ensure_bucket
from hubbub import cancelling, subjects
from hubbub.events import presence_payload
from hubbub.presence import PresenceChange
from hubbub.shards import ShardMap

__all__ = ["ChangeListener", "PresenceMirror", "open_presence_bucket"]

logger = logging.getLogger(__name__)

ChangeListener = Callable[[int, bytes], None]  # (user id, presence payload): must not wait
LastActive = Callable[[int], Awaitable[int | None]]
_TRANSIENT = (NatsError, TimeoutError, OSError)


async def open_presence_bucket(
    js: JetStreamContext, *, replicas: int, name: str = subjects.PRESENCE_BUCKET
) -> Bucket:
    """The presence bucket (created if absent; no max age: a user's last decision stays)."""
    return await ensure_bucket(js, name, ttl_s=None, replicas=replicas)


class PresenceMirror:
    """Who is online in the cluster, from the presence bucket; the snapshot of one user."""

    def __init__(
        self,
        conn: ClusterConnection,
        bucket: Bucket,
        shards: ShardMap,
        *,
        last_active: LastActive,
        refresh_s: float = 60.0,
    ) -> None:
        self._conn = conn
        self._bucket = bucket
        self._shards = shards
        self._last_active = last_active
        self.refresh_s = refresh_s
        self._online: set[int] = set()
        self._listeners: list[ChangeListener] = []
        self._during_refresh: list[tuple[PresenceChange, bytes]] | None = None
        self._refreshing = asyncio.Lock()  # one read at a time: two would share ``_during_refresh``
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self.refreshes = 0  # full reads done (for /metrics and tests)
        self.changes = 0  # changes received (for /metrics and tests)

    def listen(self, listener: ChangeListener) -> None:
        """Call ``listener(user_id, payload)`` on every change seen (a node keeps its retained topics)."""
        self._listeners.append(listener)

    def online(self, user_ids: Collection[int]) -> set[int]:
        """``PresenceView``: the users among ``user_ids`` online anywhere in the cluster."""
        online = self._online
        return {user_id for user_id in user_ids if user_id in online}

    async def snapshot(self, user_id: int) -> bytes:
        """The current ``presence/{user_id}`` payload: the bucket's, else offline with the stored activity."""
        key = subjects.presence_key(self._shards.user(user_id), user_id)
        try:
            value = await self._bucket.read_from_leader(key)
        except _TRANSIENT as exc:
            logger.warning("reading the presence of user %s failed (%r); answering from memory", user_id, exc)
        else:
            if value:
                return value
        online = user_id in self._online
        return presence_payload(user_id, online=online, last_active_ms=await self._last_active(user_id))

    async def start(self) -> None:
        """Subscribe to the changes, read the bucket (fails if NATS does not answer), keep it fresh."""
        if self._task is not None:
            raise RuntimeError("presence mirror already started")
        self._subscription = await self._conn.client.subscribe(
            subjects.kv_changes(self._bucket.name), cb=self._received
        )
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="presence-mirror")

    async def stop(self) -> None:
        """Stop following the bucket."""
        task, self._task = self._task, None
        await cancelling.stop(task)
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(*_TRANSIENT):
                await subscription.unsubscribe()

    @property
    def running(self) -> bool:
        """The refresh loop is alive (for /healthz)."""
        return self._task is not None and not self._task.done()

    async def refresh(self) -> None:
        """Read the whole bucket now; changes that arrive meanwhile are applied on top, in order.

        One refresh at a time (the periodic one and one asked for): an older read finishing
        after a newer one would put back what the newer one had replaced.
        """
        async with self._refreshing:
            await self._refresh()

    async def _refresh(self) -> None:
        self._during_refresh = []
        try:
            entries = await self._bucket.latest()
        except BaseException:
            self._during_refresh = None
            raise
        latest: dict[int, tuple[bool, bytes]] = {}
        for key, entry in entries.items():
            change = _parse(key, entry.value or b"")
            if change is not None and entry.value:
                latest[change.user_id] = (change.online, entry.value)
        during, self._during_refresh = self._during_refresh, None
        for change, payload in during:  # newer than the read, or as new: theirs is the last word
            latest[change.user_id] = (change.online, payload)
        online = {user_id for user_id, (is_online, _) in latest.items() if is_online}
        before, self._online = self._online, online
        for user_id in before ^ online:  # changes the subscription missed
            if user_id in latest:
                self._tell(user_id, latest[user_id][1])
        self.refreshes += 1

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.refresh_s):
                    await self._reconnected()
            try:
                await self.refresh()
            except _TRANSIENT as exc:
                logger.warning("reading the presence bucket failed (%r); keeping the last view", exc)

    async def _reconnected(self) -> None:
        seen = self._conn.state.reconnects
        await self._conn.state.wait_for(lambda now: now.reconnects != seen)

    async def _received(self, msg: Msg) -> None:
        if not msg.data:  # a delete or purge marker: not something a writer does
            return
        try:
            key = subjects.parse_kv_change(self._bucket.name, msg.subject)
        except ValueError:
            return
        change = _parse(key, msg.data)
        if change is None:
            return
        self.changes += 1
        if self._during_refresh is not None:
            self._during_refresh.append((change, msg.data))
        self._apply(change, msg.data)

    def _apply(self, change: PresenceChange, payload: bytes) -> None:
        if change.online:
            self._online.add(change.user_id)
        else:
            self._online.discard(change.user_id)
        self._tell(change.user_id, payload)

    def _tell(self, user_id: int, payload: bytes) -> None:
        for listener in self._listeners:
            try:
                listener(user_id, payload)
            except Exception:
                logger.exception("presence listener failed for user %s", user_id)


def _parse(key: str, payload: bytes) -> PresenceChange | None:
    try:
        _, user_id = subjects.parse_presence_key(key)
        change = PresenceChange.from_payload(payload)
    except ValueError as exc:
        logger.warning("ignoring presence entry %s: %s", key, exc)
        return None
    if change.user_id != user_id:
        logger.warning("ignoring presence entry %s: it names user %s", key, change.user_id)
        return None
    return change
