from __future__ import annotations

from collections import Counter

import pytest

from hubbub.shards import MAX_SHARDS, ShardMap, shard_of


def test_the_shard_of_an_id_is_pinned() -> None:
    # Pinned values (Python's salted ``hash`` would differ per process): a change here would
    # remap every conversation of a running cluster.
    assert shard_of("conversation", 1, 256) == 96
    assert shard_of("user", 1, 64) == 18


def test_shards_spread_evenly() -> None:
    shards = ShardMap(conversation_shards=16)
    counts = Counter(shards.conversation(cid) for cid in range(1, 16_001))
    assert set(counts) == set(range(16))
    assert max(counts.values()) < 2 * min(counts.values())


def test_conversations_and_users_hash_independently() -> None:
    shards = ShardMap(conversation_shards=256, presence_shards=256)
    same = sum(shards.conversation(n) == shards.user(n) for n in range(1, 2001))
    assert same < 100  # about 2000 / 256 by chance; equal for all if the kinds shared a hash


def test_the_shard_does_not_depend_on_how_many_nodes_are_alive() -> None:
    # The only input besides the id is the fixed shard count.
    assert ShardMap().conversation(42) == ShardMap().conversation(42)
    assert 0 <= ShardMap().user(42) < ShardMap().presence_shards


@pytest.mark.parametrize("count", [0, -1, MAX_SHARDS + 1])
def test_a_bad_shard_count_is_refused(count: int) -> None:
    with pytest.raises(ValueError, match="within 1"):
        ShardMap(conversation_shards=count)
    with pytest.raises(ValueError, match="within 1"):
        shard_of("user", 1, count)


def test_a_negative_id_is_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        ShardMap().conversation(-5)
