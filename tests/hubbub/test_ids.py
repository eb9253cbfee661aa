from __future__ import annotations

import pytest

from hubbub.ids import EPOCH_MS, SnowflakeGenerator, snowflake_time_ms


def test_ids_carry_their_time_and_increase() -> None:
    now = [EPOCH_MS + 1_000]
    generator = SnowflakeGenerator(node_id=7, clock_ms=lambda: now[0])
    first = generator.next_id()
    second = generator.next_id()
    assert second > first
    assert snowflake_time_ms(first) == EPOCH_MS + 1_000


def test_ids_keep_increasing_when_the_clock_steps_back() -> None:
    now = [EPOCH_MS + 10_000]
    generator = SnowflakeGenerator(node_id=1, clock_ms=lambda: now[0])
    before = generator.next_id()
    now[0] -= 5_000
    after = [generator.next_id() for _ in range(10_000)]  # spills over several borrowed milliseconds
    assert after == sorted(set(after))
    assert after[0] > before


def test_nodes_never_collide() -> None:
    def fixed_clock() -> int:
        return EPOCH_MS + 42

    a = SnowflakeGenerator(node_id=1, clock_ms=fixed_clock)
    b = SnowflakeGenerator(node_id=2, clock_ms=fixed_clock)
    assert {a.next_id() for _ in range(100)}.isdisjoint({b.next_id() for _ in range(100)})


def test_node_id_must_fit_ten_bits() -> None:
    with pytest.raises(ValueError, match="node id"):
        SnowflakeGenerator(node_id=1024)
