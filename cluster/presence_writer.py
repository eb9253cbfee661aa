"""The presence writers of a cluster: one per user shard, under a lease, the only one deciding.

DESIGN.md "Scaling out": connect/disconnect events go to a single writer per user shard, which
owns the device set and alone decides online/offline (grace period included). Broker nodes
run ``PresenceWriters`` beside their ``NodePresence``; its leases (group ``presence``, over the
``presence_shards``, ``cluster.leases.ShardLeases``) say which node writes which shard, and
shards move between nodes as they join and leave. The decision itself is a
``hubbub.presence.PresenceDecider`` (``messaging.presence.PresenceTracker``, handed in as a
factory by the launcher).

On gaining a shard, in this order:
1. subscribe ``hubbub.presence.events.<shard>`` (changes are held back until step 4);
2. read the shard's keys of the presence bucket: what was last published, and when;
3. ask every broker node the registry lists for its devices of the shard
   (``hubbub.presence.resync.<shard>``, answers gathered until all listed nodes answered or
   ``resync_timeout_s``);
4. seed the decider from 2, replace each node's devices from 3, apply the held changes a
   node's answer does not already cover (by its change number), and decide from then on.
So a shard that moves rebuilds its users' state instead of starting from "nobody is online":
no flap, no repeated write.

Each decision is one KV write (key ``<shard>.<uid>``, value the presence payload), compare-and-
set on the key's revision, and only while the lease is valid by this node's clock, so that a
writer that lost its lease (paused past it) cannot overwrite its successor; and the user's last
activity goes to ``record_last_active``.

Lost messages and dead nodes: a change numbered past the next expected one means one was lost,
and the writer asks that node again at once; every ``reconcile_s`` (30 s by default) it asks all
nodes again (a lost last change, a node that joined unseen). A node holding devices that the
registry no longer lists for ``dead_after_s`` is asked directly; if it does not answer either,
it is dead: all its devices disconnect at that moment, and the grace period runs as usual. So a
killed node's users go offline within registry TTL + refresh + ``dead_after_s`` +
``resync_timeout_s`` + the grace period. A reconnect of this node's NATS connection triggers a
reconciliation at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from cluster.connection import ClusterConnection
from cluster.kv import Bucket, ensure_bucket
from cluster.leases import ShardLeases, bucket_name
from cluster.registry import BROKER, NodeDirectory
from hubbub import cancelling, subjects
from hubbub.presence import DeviceChange, NodeDevices, PresenceChange, PresenceDecider, Publish

__all__ = ["LEASE_GROUP", "DeciderFactory", "PresenceWriters", "open_presence_leases"]

logger = logging.getLogger(__name__)

LEASE_GROUP = "presence"
DeciderFactory = Callable[[Publish], PresenceDecider]
_TRANSIENT = (NatsError, TimeoutError, OSError)
_RETRY_S = 0.5


async def open_presence_leases(js: JetStreamContext, *, ttl_s: float, replicas: int) -> Bucket:
    """The lease bucket of the presence writers (created with max age ``ttl_s`` if absent)."""
    return await ensure_bucket(js, bucket_name(LEASE_GROUP), ttl_s=ttl_s, replicas=replicas)


@dataclass
class _Mark:
    """What the writer has applied of one node: its incarnation and last change number."""

    boot: str
    seq: int


class PresenceWriters:
    """This node's presence writers, one per user shard it holds the lease of (group ``presence``)."""

    def __init__(
        self,
        conn: ClusterConnection,
        bucket: Bucket,
        directory: NodeDirectory,
        *,
        leases: Bucket,
        owner_id: str,
        shards: int,
        lease_ttl_s: float,
        new_decider: DeciderFactory,
        record_last_active: Callable[[int, int], None],
        resync_timeout_s: float = 2.0,
        reconcile_s: float = 30.0,
        dead_after_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.conn = conn
        self.bucket = bucket
        self.directory = directory
        self.new_decider = new_decider
        self.record_last_active = record_last_active
        self.resync_timeout_s = resync_timeout_s
        self.reconcile_s = reconcile_s
        self.dead_after_s = directory.refresh_s * 2 if dead_after_s is None else dead_after_s
        self.monotonic = monotonic
        self.leases = ShardLeases(
            leases,
            owner_id=owner_id,
            shards=shards,
            ttl_s=lease_ttl_s,
            on_gained=self._gained,
            on_lost=self._lost,
        )
        self._writers: dict[int, _ShardWriter] = {}
        self._absent_since: dict[str, float] = {}
        self._watch: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.writes = 0  # KV writes done (one per decision), for /metrics and tests
        self.dead_nodes = 0  # nodes declared dead, for /metrics and tests

    # --- running ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Watch the registry for dead nodes, and join the lease group (shards come as leases do)."""
        if self._watch is not None:
            raise RuntimeError("presence writers already started")
        self._watch = asyncio.create_task(self._watch_nodes(), name="presence-dead-nodes")
        await self.leases.start()

    async def stop(self, *, release: bool = True) -> None:
        """Stop every shard writer and the watch; with ``release`` the shards move on at once."""
        await self.leases.stop(release=release)
        for shard in list(self._writers):
            self._lost(shard, 0)
        watch, self._watch = self._watch, None
        await cancelling.stop(watch)

    @property
    def shards(self) -> set[int]:
        """The shards written here and ready (rebuilt from the bucket and the nodes)."""
        return {shard for shard, writer in self._writers.items() if writer.ready}

    @property
    def running(self) -> bool:
        """The leases, the dead-node watch and every shard writer are alive (for /healthz)."""
        alive = self.leases.running and self._watch is not None and not self._watch.done()
        return alive and all(writer.running for writer in self._writers.values())

    def holds(self, shard: int) -> bool:
        """This node's lease of ``shard`` is valid now (by its own clock): it may write it."""
        return self.leases.current_epoch(shard) is not None

    def online(self, shard: int, user_ids: Collection[int]) -> set[int]:
        """Who the writer of ``shard`` counts online now (for tests and debugging)."""
        writer = self._writers.get(shard)
        return set() if writer is None or writer.decider is None else writer.decider.online(user_ids)

    def live_brokers(self) -> set[str]:
        """Broker nodes the registry lists now."""
        return {node.node_id for node in self.directory.nodes.values() if node.kind == BROKER}

    # --- ShardLeases callbacks (they must not block) --------------------------------------------

    def _gained(self, shard: int, epoch: int) -> None:
        del epoch
        self._lost(shard, 0)
        writer = _ShardWriter(self, shard)
        self._writers[shard] = writer
        writer.start()

    def _lost(self, shard: int, epoch: int) -> None:
        del epoch
        writer = self._writers.pop(shard, None)
        if writer is not None:
            writer.stop()

    def background(self, work: Coroutine[None, None, None], name: str) -> None:
        """Run ``work`` on its own (clean-ups that outlive a shard writer)."""
        task = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _watch_nodes(self) -> None:
        while True:
            await asyncio.sleep(self.directory.refresh_s)
            live, now = self.live_brokers(), self.monotonic()
            known = set().union(*(writer.nodes() for writer in self._writers.values()))
            for node in known - live:
                since = self._absent_since.setdefault(node, now)
                if now - since >= self.dead_after_s:
                    del self._absent_since[node]
                    for writer in list(self._writers.values()):
                        writer.confirm_dead(node)
            for node in set(self._absent_since) - (known - live):
                del self._absent_since[node]


class _ShardWriter:
    """The writer of one shard while this node holds its lease."""

    def __init__(self, owner: PresenceWriters, shard: int) -> None:
        self.owner = owner
        self.shard = shard
        self.decider: PresenceDecider | None = None
        self.ready = False
        self._held_back: list[DeviceChange] = []
        self._marks: dict[str, _Mark] = {}
        self._pending: dict[int, bytes] = {}
        self._revisions: dict[int, int] = {}  # of online users' keys (offline ones: found on conflict)
        self._subscription: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._stopped = False
        self._confirming: set[str] = set()

    def start(self) -> None:
        self._main = self._spawn(self._run(), f"presence-shard-{self.shard}")

    def stop(self) -> None:
        self._stopped = True
        if self.decider is not None:
            self.decider.close()
        self._pending.clear()
        for task in list(self._tasks):
            cancelling.cancel(task)
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            self.owner.background(_unsubscribe(subscription), f"presence-unsubscribe-{self.shard}")

    @property
    def running(self) -> bool:
        return self._main is not None and not self._main.done()

    def nodes(self) -> set[str]:
        known = set(self._marks)
        return known | self.decider.nodes() if self.decider is not None else known

    def confirm_dead(self, node: str) -> None:
        if node in self.nodes() and node not in self._confirming:
            self._confirming.add(node)
            self._spawn(self._confirm_dead(node), f"presence-confirm-{node}")

    # --- the shard's life ------------------------------------------------------------------------

    async def _run(self) -> None:
        owner = self.owner
        self._subscription = await owner.conn.client.subscribe(
            subjects.presence_events(self.shard), cb=self._received
        )
        seeds, answers = await asyncio.gather(self._read_bucket(), self._ask(None, owner.live_brokers()))
        decider = owner.new_decider(self._publish)
        self.decider = decider
        for user_id, (change, revision) in seeds.items():
            if change.online:
                self._revisions[user_id] = revision
            decider.seed(user_id, change.online, change.at_ms)
        for answer in answers:
            self._answered(answer)
        held_back, self._held_back = self._held_back, []
        for report in held_back:
            self._apply(report)
        self.ready = True
        logger.info(
            "presence shard %d rebuilt: %d users seeded, %d nodes", self.shard, len(seeds), len(answers)
        )
        while True:  # reconcile: every reconcile_s, and at once after a reconnect (changes lost)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(owner.reconcile_s):
                    await self._reconnected()
            for answer in await self._ask(None, owner.live_brokers()):
                self._answered(answer)

    async def _reconnected(self) -> None:
        state = self.owner.conn.state
        seen = state.reconnects
        await state.wait_for(lambda now: now.reconnects != seen)

    async def _read_bucket(self) -> dict[int, tuple[PresenceChange, int]]:
        while True:
            try:
                entries = await self.owner.bucket.latest(f"{self.shard}.>")
                break
            except _TRANSIENT as exc:
                logger.warning("reading presence shard %d failed (%r); retrying", self.shard, exc)
                await asyncio.sleep(_RETRY_S)
        seeds: dict[int, tuple[PresenceChange, int]] = {}
        for key, entry in entries.items():
            try:
                change = PresenceChange.from_payload(entry.value or b"")
            except ValueError as exc:
                logger.warning("ignoring presence entry %s: %s", key, exc)
                continue
            seeds[change.user_id] = (change, entry.revision or 0)
        return seeds

    async def _ask(self, node: str | None, expected: set[str]) -> list[NodeDevices]:
        """Resync: the answers of ``node`` (or every node), until ``expected`` answered or the deadline."""
        client = self.owner.conn.client
        inbox = client.new_inbox()
        answers: list[NodeDevices] = []
        try:
            subscription = await client.subscribe(inbox)
        except _TRANSIENT as exc:
            logger.warning("presence resync of shard %d not asked (%r)", self.shard, exc)
            return answers
        try:
            headers = None if node is None else {subjects.PRESENCE_NODE: node}
            await client.publish(subjects.presence_resync(self.shard), b"", reply=inbox, headers=headers)
            async with asyncio.timeout(self.owner.resync_timeout_s):
                while not expected <= {answer.node for answer in answers}:
                    msg = await subscription.next_msg(timeout=self.owner.resync_timeout_s)
                    try:
                        answers.append(NodeDevices.from_json(msg.data))
                    except ValueError as exc:
                        logger.warning("ignoring a resync answer for shard %d: %s", self.shard, exc)
        except _TRANSIENT:
            missing = expected - {answer.node for answer in answers}
            if missing:
                logger.info("presence shard %d: no resync answer from %s", self.shard, sorted(missing))
        finally:
            await _unsubscribe(subscription)
        return answers

    async def _confirm_dead(self, node: str) -> None:
        try:
            await self._ask_or_bury(node)
        finally:
            self._confirming.discard(node)

    async def _ask_or_bury(self, node: str) -> None:
        for answer in await self._ask(node, {node}):
            if answer.node == node:
                self._answered(answer)
                return
        if self.decider is not None and not self._stopped:
            logger.info("presence shard %d: node %s is gone; its devices disconnect now", self.shard, node)
            self.owner.dead_nodes += 1
            self._marks.pop(node, None)
            self.decider.node_died(node)

    # --- what arrives ------------------------------------------------------------------------------

    async def _received(self, msg: Msg) -> None:
        try:
            change = DeviceChange.from_json(msg.data)
        except ValueError as exc:
            logger.warning("ignoring a presence report on shard %d: %s", self.shard, exc)
            return
        if self.decider is None:
            self._held_back.append(change)
        else:
            self._apply(change)

    def _apply(self, change: DeviceChange) -> None:
        decider = self.decider
        if decider is None or self._stopped:
            return
        mark = self._marks.get(change.node)
        if mark is None or mark.boot != change.boot:
            if mark is not None:  # the node restarted under the same id: its old devices are gone
                decider.resync(change.node, [])
            if change.seq != 1:  # what it held before this change is unknown here
                self._ask_later(change.node)
            mark = self._marks[change.node] = _Mark(change.boot, change.seq - 1)
        if change.seq <= mark.seq:
            return  # already covered by the node's resync answer
        if change.seq > mark.seq + 1:
            self._ask_later(change.node)  # a change was lost on the wire
        mark.seq = change.seq
        if change.connected:
            decider.device_connected(change.user_id, change.device_id, change.node)
        else:
            decider.device_disconnected(change.user_id, change.device_id, change.node)

    def _answered(self, answer: NodeDevices) -> None:
        if self.decider is None or self._stopped:
            return
        mark = self._marks.get(answer.node)
        if mark is not None and mark.boot == answer.boot and answer.seq < mark.seq:
            return  # older than changes already applied
        self._marks[answer.node] = _Mark(answer.boot, answer.seq)
        self.decider.resync(answer.node, answer.devices)

    def _ask_later(self, node: str) -> None:
        async def ask() -> None:
            for answer in await self._ask(node, {node}):
                self._answered(answer)

        self._spawn(ask(), f"presence-resync-{node}")

    # --- what goes out -----------------------------------------------------------------------------

    def _publish(self, user_id: int, online: bool, at_ms: int) -> None:
        if self._stopped:
            return
        self._pending[user_id] = PresenceChange(user_id, online, at_ms).to_payload()
        self.owner.record_last_active(user_id, at_ms)
        if self._writer is None or self._writer.done():
            self._writer = self._spawn(self._write(), f"presence-writes-{self.shard}")

    async def _write(self) -> None:
        while self._pending:
            if not self.owner.holds(self.shard):
                self._pending.clear()  # the lease ran out: whoever holds it now decides
                return
            user_id, payload = next(iter(self._pending.items()))
            try:
                await self._put(user_id, payload)
            except _TRANSIENT as exc:
                logger.warning("writing presence of user %s failed (%r); retrying", user_id, exc)
                await asyncio.sleep(_RETRY_S)
                continue
            if self._pending.get(user_id) is payload:
                del self._pending[user_id]

    async def _put(self, user_id: int, payload: bytes) -> None:
        kv = self.owner.bucket.kv
        key = subjects.presence_key(self.shard, user_id)
        revision = self._revisions.pop(user_id, None)
        try:
            written = await (
                kv.create(key, payload) if revision is None else kv.update(key, payload, last=revision)
            )
        except KeyWrongLastSequenceError:
            # Written by someone else since (a predecessor's last write), or an offline user's
            # key we did not keep: if the lease is still ours, ours is the newer decision.
            try:
                revision = (await kv.get(key)).revision
            except KeyNotFoundError:
                revision = None
            if self._stopped or not self.owner.holds(self.shard):
                return  # a paused writer that lost its lease: its successor's word stands
            written = await (
                kv.create(key, payload) if revision is None else kv.update(key, payload, last=revision)
            )
        self.owner.writes += 1
        if PresenceChange.from_payload(payload).online:
            self._revisions[user_id] = written

    # --- tasks -------------------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[None, None, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("presence task %s of shard %d failed", task.get_name(), self.shard, exc_info=exc)


async def _unsubscribe(subscription: Subscription) -> None:
    with contextlib.suppress(*_TRANSIENT):
        await subscription.unsubscribe()
