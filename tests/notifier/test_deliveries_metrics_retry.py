from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import notifier
from notifier.deliveries import (
    Claim,
    ClaimState,
    DeliveryLog,
    MemoryDeliveryLog,
    SqlDeliveryLog,
    push_deliveries,
)
from notifier.metrics import PushMetrics
from notifier.retry import RetryPolicy
from tests.notifier.clock import FakeClock
from tests.support.schema import differences, migrate


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'push.db'}")
    await migrate(engine, notifier.MIGRATIONS)
    yield engine
    await engine.dispose()


async def test_the_migrated_database_matches_the_push_deliveries_table(engine: AsyncEngine) -> None:
    assert await differences(engine, push_deliveries.metadata) == []


async def migrate_to(engine: AsyncEngine, revision: str) -> None:
    """The notifier's branch up to ``revision`` only (``tests.support.schema.migrate`` goes to heads)."""

    def upgrade(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parents[2] / "launcher" / "migrations"))
        config.set_main_option("path_separator", "os")
        config.set_main_option("version_locations", str(notifier.MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(upgrade)


WON = Claim(ClaimState.WON)
SETTLED = Claim(ClaimState.SETTLED)


@pytest.fixture(params=["memory", "sql"])
def make_log(request: pytest.FixtureRequest, engine: AsyncEngine) -> Callable[..., DeliveryLog]:
    """Either delivery log: both keep the same two-phase contract."""

    def build(clock: FakeClock, stale_after_s: float = 60.0) -> DeliveryLog:
        if request.param == "memory":
            return MemoryDeliveryLog(stale_after_s=stale_after_s, clock=clock)
        return SqlDeliveryLog(engine, clock, stale_after_s=stale_after_s)

    return build


async def test_a_claim_is_won_once_and_settled_pairs_are_skipped(
    make_log: Callable[..., DeliveryLog],
) -> None:
    log = make_log(FakeClock())
    assert await log.claim(1, "a") == WON
    assert await log.claim(1, "b") == WON
    assert await log.claim(2, "a") == WON
    await log.settle(1, "a")
    assert await log.claim(1, "a") == SETTLED


async def test_a_live_claim_is_busy_until_it_goes_stale_then_taken_over(
    make_log: Callable[..., DeliveryLog],
) -> None:
    clock = FakeClock()
    log = make_log(clock, stale_after_s=60.0)
    assert await log.claim(1, "a") == WON
    clock.advance(20.0)
    assert await log.claim(1, "a") == Claim(ClaimState.BUSY, 40.0)
    await log.refresh(1, "a")  # the holder is retrying: still alive
    clock.advance(50.0)
    assert await log.claim(1, "a") == Claim(ClaimState.BUSY, 10.0)
    clock.advance(10.0)  # the holder died: its claim is stale
    assert await log.claim(1, "a") == WON
    assert (await log.claim(1, "a")).state is ClaimState.BUSY  # taken over once, by one notifier
    await log.settle(1, "a")
    clock.advance(600.0)
    assert await log.claim(1, "a") == SETTLED
    await log.refresh(1, "a")  # a settled pair stays settled
    assert await log.claim(1, "a") == SETTLED


async def test_the_memory_log_forgets_the_oldest_beyond_its_capacity() -> None:
    log = MemoryDeliveryLog(capacity=2)
    for message_id in (1, 2, 3):
        assert await log.claim(message_id, "a") == WON
        await log.settle(message_id, "a")
    assert await log.claim(1, "a") == WON
    assert await log.claim(3, "a") == SETTLED


async def test_a_sql_claim_is_won_once_across_engines(engine: AsyncEngine, tmp_path: Path) -> None:
    assert await SqlDeliveryLog(engine).claim(2**62, "token-1") == WON
    other = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'push.db'}")
    try:
        await migrate(other, notifier.MIGRATIONS)  # idempotent
        log = SqlDeliveryLog(other)
        assert (await log.claim(2**62, "token-1")).state is ClaimState.BUSY
        assert await log.claim(2**62, "token-2") == WON
    finally:
        await other.dispose()


async def test_claims_made_before_the_two_phase_revision_count_as_settled(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    try:
        await migrate_to(engine, "n0001")
        async with engine.begin() as connection:
            await connection.execute(
                text("INSERT INTO push_deliveries (message_id, token_id, claimed_at_ms) VALUES (5, 'a', 1)")
            )
        await migrate(engine, notifier.MIGRATIONS)
        assert await SqlDeliveryLog(engine).claim(5, "a") == SETTLED
    finally:
        await engine.dispose()


async def test_old_sql_claims_are_pruned(engine: AsyncEngine) -> None:
    clock = FakeClock()
    log = SqlDeliveryLog(engine, clock=clock)
    assert await log.claim(1, "a") == WON
    await log.settle(1, "a")
    clock.advance(3600)
    assert await log.claim(2, "a") == WON
    await log.settle(2, "a")
    assert await log.prune(older_than_s=1800) == 1
    assert await log.claim(1, "a") == WON
    assert await log.claim(2, "a") == SETTLED


def test_metrics_render_in_the_prometheus_text_format() -> None:
    metrics = PushMetrics()
    metrics.sent("apns")
    metrics.sent("apns")
    metrics.failed("fcm")
    metrics.retried("webpush")
    metrics.removed("apns")
    metrics.dropped("intake")

    text = metrics.render().decode()
    assert "# TYPE hubbub_push_sent_total counter" in text
    assert 'hubbub_push_sent_total{provider="apns"} 2.0' in text
    assert 'hubbub_push_failed_total{provider="fcm"} 1.0' in text
    assert 'hubbub_push_retried_total{provider="webpush"} 1.0' in text
    assert 'hubbub_push_tokens_removed_total{provider="apns"} 1.0' in text
    assert 'hubbub_push_dropped_total{stage="intake"} 1.0' in text
    assert metrics.value("sent", provider="apns") == 2
    assert metrics.value("sent", provider="fcm") == 0


def test_two_metric_sets_do_not_collide() -> None:
    first, second = PushMetrics(), PushMetrics()
    first.sent("apns")
    assert second.value("sent", provider="apns") == 0


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=1.0, max_delay=8.0)
    assert [policy.delay(n, None, 0.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [policy.delay(n, None, 0.999999) for n in range(1, 6)] == pytest.approx([1.0, 2.0, 4.0, 8.0, 8.0])


def test_retry_after_is_a_floor_and_too_long_a_wait_gives_up() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=60.0)
    assert policy.delay(1, 30.0, 0.5) == 30.0
    assert policy.delay(1, 0.1, 0.5) == 0.75
    assert policy.delay(1, 61.0, 0.5) is None


def test_attempts_are_bounded() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.delay(2, None, 0.5) is not None
    assert policy.delay(3, None, 0.5) is None
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
