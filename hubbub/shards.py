"""Virtual shards: which conversation shard owns a conversation, which presence shard a user.

A cluster splits the work into a FIXED number of virtual shards (a setting, 256 by default),
never "hash mod live nodes": the shard of a conversation must not change when a persister
joins or leaves, because the shard is the unit that has one writer (a lease) and one stream
partition. Nodes come and go by moving whole shards between owners; the count itself is fixed
for the life of a cluster's data (changing it remaps every conversation, a migration).

The hash is BLAKE2b over the id's decimal text (the form ids take in JSON and topics) with a
per-kind prefix, so every process and every language computes the same shard, unlike Python's
``hash``, which is salted per process for strings. Conversations and users hash under different
prefixes, so a conversation and a user that share a numeric id are spread independently.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["DEFAULT_CONVERSATION_SHARDS", "DEFAULT_PRESENCE_SHARDS", "MAX_SHARDS", "ShardMap", "shard_of"]

DEFAULT_CONVERSATION_SHARDS = 256
DEFAULT_PRESENCE_SHARDS = 64
MAX_SHARDS = 65_536
_DIGEST_BYTES = 8


def shard_of(kind: str, entity_id: int, shards: int) -> int:
    """The shard in ``range(shards)`` of the entity ``entity_id`` of ``kind`` (a stable hash)."""
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shard count must be within 1..{MAX_SHARDS}, not {shards}")
    if entity_id < 0:
        raise ValueError(f"ids are non-negative, not {entity_id}")
    digest = hashlib.blake2b(f"{kind}:{entity_id}".encode("ascii"), digest_size=_DIGEST_BYTES).digest()
    return int.from_bytes(digest, "big") % shards


@dataclass(frozen=True)
class ShardMap:
    """The cluster's shard counts, and the shard of a conversation or a user."""

    conversation_shards: int = DEFAULT_CONVERSATION_SHARDS
    presence_shards: int = DEFAULT_PRESENCE_SHARDS

    def __post_init__(self) -> None:
        for name in ("conversation_shards", "presence_shards"):
            count = getattr(self, name)
            if not 1 <= count <= MAX_SHARDS:
                raise ValueError(f"{name} must be within 1..{MAX_SHARDS}, not {count}")

    def conversation(self, conversation_id: int) -> int:
        """The conversation shard (persister lease, stream partition) of ``conversation_id``."""
        return shard_of("conversation", conversation_id, self.conversation_shards)

    def user(self, user_id: int) -> int:
        """The presence shard (single presence writer) of ``user_id``."""
        return shard_of("user", user_id, self.presence_shards)
