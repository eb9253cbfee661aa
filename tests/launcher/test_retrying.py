"""Start-up steps against NATS are tried again on transient failures, never on a conflict."""

from __future__ import annotations

import pytest
from nats.errors import TimeoutError as NatsTimeoutError

from cluster.connection import ClusterConfigError
from launcher.cluster_node import retrying


async def test_a_transient_failure_is_tried_again() -> None:
    attempts: list[int] = []

    async def create() -> str:
        attempts.append(len(attempts))
        if len(attempts) == 1:
            raise NatsTimeoutError  # a stream created while the cluster elects its leader
        return "bucket"

    assert await retrying("creating a bucket", create) == "bucket"
    assert attempts == [0, 1]


async def test_a_conflict_fails_at_once_and_a_failure_past_the_deadline_too() -> None:
    attempts = 0

    async def conflicting() -> None:
        nonlocal attempts
        attempts += 1
        raise ClusterConfigError("KV bucket hubbub_nodes has max age 6.0s, this node needs 3.0s")

    with pytest.raises(ClusterConfigError):
        await retrying("opening the registry", conflicting)
    assert attempts == 1

    async def down() -> None:
        raise NatsTimeoutError

    with pytest.raises(NatsTimeoutError):
        await retrying("opening the registry", down, timeout_s=0)
