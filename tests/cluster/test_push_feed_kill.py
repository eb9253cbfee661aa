"""A notifier killed mid-batch: no push lost for an offline user, none sent twice.

Two notifiers of one lease group on the real 3-server NATS, pushing through the webhook
provider to a local gateway that counts every push it accepts per (conversation, seq, user),
with one delivery log (a database both reach, as in production). Notifier A gets committed
messages of two conversations and is killed at its worst moment:

- conversation 1: pushed and settled for four of its five offline members, while the pushes to
  the fifth are in flight (claimed, the gateway holding the requests unanswered);
- conversation 2: fetched, not yet planned (A is stuck asking for its members).

A is killed without a goodbye, two ways: in its own process with SIGKILL (this module is also
A's script), or in this process by closing its NATS connection first (no ack, no renewal, no
in-progress mark leaves it after that) and then cancelling its tasks. The gateway then refuses
what it was holding, as a provider would for a request whose client went away. Notifier B takes
the shards over once A's leases run out, JetStream redelivers A's unacked batches after the ack
wait, and B's delivery log skips the 40 pushes A made, takes over A's 10 stale claims and pushes
conversation 2: every push exactly once at the gateway.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import notifier
from cluster.connection import ClusterConnection, NatsOptions
from cluster.push_feed import NatsCommittedFeed
from hubbub.envelope import CommittedMessage
from hubbub.stores import PushAudience, PushRecipient, PushToken
from notifier.deliveries import SqlDeliveryLog
from notifier.dispatcher import Dispatcher
from notifier.planner import PushPlanner
from notifier.providers.webhook import WebhookProvider
from tests.cluster.test_push_feed import (
    SHARDS,
    conversations_on,
    fresh_committed_stream,
    open_feed,
    publish,
    result,
    within,
)
from tests.notifier.http_server import serve
from tests.support.nats import NatsCluster
from tests.support.schema import migrate

_ROOT = Path(__file__).resolve().parents[2]
SENDER = 1
MEMBERS = frozenset(range(1, 7))  # the sender and five offline members
HELD_USER = 6  # whose pushes A has in flight when it dies
FIRST_MESSAGES = 10
SECOND_MESSAGES = 5


@dataclass
class Gateway:
    """A push gateway counting accepted pushes; requests for ``held`` tokens wait for ``gate``."""

    held: set[str] = field(default_factory=set)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    accepted: Counter[tuple[int, int, str]] = field(default_factory=Counter)
    holding: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/push", self._push, methods=["POST"])])

    async def _push(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        data = body["notification"]["data"]
        token = str(body["token"]["value"])
        if token in self.held and not self.gate.is_set():
            self.holding += 1
            self._changed.set()
            await self.gate.wait()
            return Response(status_code=503)  # the client went away: nothing was pushed
        self.accepted[int(data["conversation_id"]), int(data["seq"]), token] += 1
        self._changed.set()
        return Response(status_code=200)

    async def until(self, accepted: int, holding: int = 0) -> None:
        while sum(self.accepted.values()) < accepted or self.holding < holding:
            self._changed.clear()
            await self._changed.wait()


class SettleCounting(SqlDeliveryLog):
    """The delivery log, telling the test how many pushes it recorded as over."""

    def __init__(self, engine: AsyncEngine) -> None:
        # Stale after 1 s, below the send timeout, only because here the holder is known dead.
        super().__init__(engine, stale_after_s=1.0)
        self.settled = 0
        self._changed = asyncio.Event()

    async def settle(self, message_id: int, token_id: str) -> None:
        await super().settle(message_id, token_id)
        self.settled += 1
        self._changed.set()

    async def until(self, settled: int) -> None:
        while self.settled < settled:
            self._changed.clear()
            await self._changed.wait()


class Directory:
    """The account store's push side: one webhook token per user, nobody muted."""

    async def audience(self, message: CommittedMessage, user_ids: Collection[int]) -> PushAudience:
        del message  # every message goes to every offline member
        recipients = tuple(
            PushRecipient(user, 1, (PushToken(f"hook-{user}", "webhook", f"u{user}"),))
            for user in sorted(user_ids)
        )
        return PushAudience("Ann", None, recipients)

    async def remove_token(self, token_id: str) -> int | None:
        raise AssertionError(f"no token is rejected here ({token_id})")


@dataclass
class Notifier:
    """One notifier process's parts, on its own NATS connection."""

    conn: ClusterConnection
    feed: NatsCommittedFeed
    log: SettleCounting
    dispatcher: Dispatcher
    provider: WebhookProvider
    tasks: list[asyncio.Task[None]]

    async def kill(self) -> None:
        """Gone at once: NATS first (nothing is acked or renewed after this), then everything else."""
        await self.conn.client.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.feed.close(release=False)
        await self.provider.close()


@asynccontextmanager
async def notifier_node(
    urls: tuple[str, ...],
    name: str,
    group: str,
    engine: AsyncEngine,
    gateway_url: str,
    *,
    stuck_on: tuple[int, asyncio.Event] | None = None,
) -> AsyncIterator[Notifier]:
    """A notifier; with ``stuck_on``, asking the members of that conversation hangs (and says so)."""
    conn = await ClusterConnection.connect(NatsOptions(servers=urls, name=name))

    async def remove_token(token: PushToken) -> None:
        await Directory().remove_token(token.token_id)

    feed = await open_feed(conn.js, name, group)
    provider = WebhookProvider(url=gateway_url)
    log = SettleCounting(engine)
    dispatcher = Dispatcher(
        providers=[provider],
        remove_token=remove_token,
        delivery_log=log,
        coalesce_window=0.0,  # count every message's push: no bursts folded
        send_timeout=60.0,
    )

    async def members(conversation_id: int) -> frozenset[int]:
        if stuck_on is not None and conversation_id == stuck_on[0]:
            stuck_on[1].set()
            await asyncio.Event().wait()  # the store hangs: A dies here
        return MEMBERS

    planner = PushPlanner(Directory(), dispatcher, members=members, online=lambda _users: set(), feed=feed)
    tasks = [
        asyncio.create_task(dispatcher.run(), name=f"{name}-dispatcher"),
        asyncio.create_task(planner.run(), name=f"{name}-planner"),
    ]
    node = Notifier(conn, feed, log, dispatcher, provider, tasks)
    try:
        yield node
    finally:
        if not conn.client.is_closed:
            await node.kill()


class Victim(Protocol):
    """Notifier A, seen from the test: what it did so far, and its death."""

    async def settled(self, count: int) -> None:
        """Wait until A recorded ``count`` pushes as over in the delivery log."""
        ...

    async def stuck(self) -> None:
        """Wait until A hangs planning the second conversation."""
        ...

    async def kill(self) -> None:
        """A dies without a goodbye."""
        ...


@dataclass
class InProcessVictim:
    """A in this process: killed by closing its NATS connection, then cancelling its tasks."""

    node: Notifier
    stuck_event: asyncio.Event

    async def settled(self, count: int) -> None:
        await self.node.log.until(count)

    async def stuck(self) -> None:
        await self.stuck_event.wait()

    async def kill(self) -> None:
        await self.node.kill()


@dataclass
class ProcessVictim:
    """A in a process of its own (this module run as a script), killed with SIGKILL."""

    process: asyncio.subprocess.Process
    log: Path

    @classmethod
    async def start(cls, spec: VictimSpec, log: Path) -> ProcessVictim:
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                __name__,
                orjson.dumps(dataclasses.asdict(spec)).decode(),
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                cwd=_ROOT,
            )
        victim = cls(process, log)
        await within(victim._line("ready"))
        return victim

    async def _line(self, wanted: str) -> None:
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                code = await self.process.wait()
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
                raise AssertionError(f"notifier A exited with {code} before saying {wanted!r}:\n{tail}")
            if line.decode().strip() == wanted:
                return

    async def settled(self, count: int) -> None:
        await self._line(f"settled {count}")

    async def stuck(self) -> None:
        await self._line("stuck")

    async def kill(self) -> None:
        self.process.kill()
        await self.process.wait()


@dataclass(frozen=True)
class VictimSpec:
    """Where notifier A works: NATS, its lease group, the delivery log, the gateway, where it hangs."""

    urls: tuple[str, ...]
    group: str
    database: str
    gateway: str
    stuck_on: int

    @asynccontextmanager
    async def running(self, stuck: asyncio.Event) -> AsyncIterator[Notifier]:
        """A, owning every shard (the only notifier of its group when it starts)."""
        engine = create_async_engine(f"sqlite+aiosqlite:///{self.database}")
        stuck_on = (self.stuck_on, stuck)
        try:
            async with notifier_node(
                self.urls, "notifier-a", self.group, engine, self.gateway, stuck_on=stuck_on
            ) as node:
                assert node.feed.leases is not None
                assert sorted(node.feed.leases.owned) == list(range(SHARDS))
                yield node
        finally:
            await engine.dispose()


@asynccontextmanager
async def victim(kind: str, spec: VictimSpec, log: Path) -> AsyncIterator[Victim]:
    """Notifier A, in this process or in its own; dead (or killed) on the way out."""
    if kind == "sigkill":
        process = await ProcessVictim.start(spec, log)
        try:
            yield process
        finally:
            if process.process.returncode is None:
                await process.kill()
        return
    stuck = asyncio.Event()
    async with spec.running(stuck) as node:
        yield InProcessVictim(node, stuck)


@pytest.mark.parametrize("kind", ["cancelled", "sigkill"])
async def test_a_notifier_killed_mid_batch_loses_no_push_and_repeats_none(
    kind: str, nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    group = uuid.uuid4().hex[:12]
    first, second = conversations_on(2)
    gateway = Gateway(held={f"u{HELD_USER}"})
    urls = tuple(nats_cluster.urls)
    persister = await ClusterConnection.connect(NatsOptions(servers=urls, name="persister"))
    database = tmp_path / "deliveries.db"
    engine = create_async_engine(f"sqlite+aiosqlite:///{database}")
    try:
        await migrate(engine, notifier.MIGRATIONS)
        await fresh_committed_stream(persister.js)
        async with serve(gateway.app()) as base_url:
            url = f"{base_url}/push"
            spec = VictimSpec(urls, group, str(database), url, second)
            async with victim(kind, spec, tmp_path / "notifier-a.log") as a:
                await publish(persister.js, [result(first, seq) for seq in range(1, FIRST_MESSAGES + 1)])
                others = len(MEMBERS) - 2  # neither the sender nor the held user
                await within(gateway.until(accepted=FIRST_MESSAGES * others, holding=FIRST_MESSAGES))
                # Killed after A recorded its pushes: a kill between the gateway's answer and that
                # record is the window left (see notifier.deliveries), where one push repeats.
                await within(a.settled(FIRST_MESSAGES * others))
                await publish(persister.js, [result(second, seq) for seq in range(1, SECOND_MESSAGES + 1)])
                await within(a.stuck())
                await a.kill()
            gateway.gate.set()  # what A had in flight is refused: its client is gone

            async with notifier_node(urls, "notifier-b", group, engine, url) as b:
                offline = len(MEMBERS) - 1
                await within(gateway.until(accepted=(FIRST_MESSAGES + SECOND_MESSAGES) * offline))
                await within(b.feed.wait_settled())
                await within(b.dispatcher.wait_idle())
                skipped = b.dispatcher.metrics.value("duplicates")
                assert b.feed.leases is not None
                assert sorted(b.feed.leases.owned) == list(range(SHARDS))  # took A's shards over

        expected = {
            (conversation, seq, f"u{user}")
            for conversation, count in ((first, FIRST_MESSAGES), (second, SECOND_MESSAGES))
            for seq in range(1, count + 1)
            for user in MEMBERS - {SENDER}
        }
        assert set(gateway.accepted) == expected
        assert set(gateway.accepted.values()) == {1}  # none twice
        assert skipped == FIRST_MESSAGES * (len(MEMBERS) - 2)  # A's pushes, redelivered and skipped
    finally:
        await engine.dispose()
        await persister.close()


async def _run_victim(spec: VictimSpec) -> None:
    """Notifier A as a process: says ``ready``, ``settled <n>`` after each record, ``stuck``."""
    stuck = asyncio.Event()

    def say(line: str) -> None:
        sys.stdout.write(f"{line}\n")
        sys.stdout.flush()

    async def say_stuck() -> None:
        await stuck.wait()
        say("stuck")

    async with spec.running(stuck) as node:
        say("ready")
        reporter = asyncio.create_task(say_stuck())
        for count in itertools.count(1):
            await node.log.until(count)
            say(f"settled {count}")
        await reporter


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    fields = orjson.loads(sys.argv[1])
    asyncio.run(_run_victim(VictimSpec(**{**fields, "urls": tuple(fields["urls"])})))
