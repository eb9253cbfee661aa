"""A messaging core over test doubles of its Protocols, on a stepped clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hubbub.ids import SnowflakeGenerator
from messaging import IngestLimits, MessagingCore
from persister.local_log import AcceptedQueue, LocalAcceptedLog
from tests.messaging.doubles import FakeConnections, FakeDirectory, ManualClock

GRACE_S = 5.0
LIMITS = IngestLimits(max_chars=20, sends_per_second=1.0, send_burst=3, membership_ttl_s=30.0)
ALICE, BOB, CAROL = 1, 2, 3
CID = 100


@dataclass
class World:
    core: MessagingCore
    clock: ManualClock
    connections: FakeConnections
    directory: FakeDirectory
    accepted: AcceptedQueue


@pytest.fixture
async def world() -> World:
    clock = ManualClock()
    connections = FakeConnections()
    directory = FakeDirectory(conversations={CID: frozenset({ALICE, BOB, CAROL})})
    log = LocalAcceptedLog(4)
    core = MessagingCore(
        connections=connections,
        directory=directory,
        accepted=log,
        ids=SnowflakeGenerator(1, clock_ms=clock.wall_ms),
        limits=LIMITS,
        presence_grace_s=GRACE_S,
        clock=clock,
    )
    return World(core, clock, connections, directory, log.queue)
