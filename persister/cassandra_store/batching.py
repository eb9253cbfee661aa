"""A commit's writes packed into few requests, as unlogged batches Cassandra takes without complaint.

Each request costs the driver (Python, on a thread beside the event loop) and the server a
parse, a dispatch and a response, whatever it carries, so one request per row is what made
commits slow. Unlogged batches cut the count without buying the batch log's second write, and
the store needs no atomicity from them: the conversation head, written afterwards, is what
makes rows visible. Cassandra shapes what a batch may be (``cassandra.yaml`` defaults):

- rows of one partition are applied as one mutation, and a batch of one mutation is exempt
  from the batch size checks (CASSANDRA-10876): the cheapest write there is. A conversation's
  messages of a commit share their partition (conversation, bucket), so they go as one;
- a batch spanning partitions warns past ``batch_size_warn_threshold`` (5 KiB, and fails
  past 50 KiB) and past ``unlogged_batch_across_partitions_warn_threshold`` (10 partitions),
  because its coordinator then forwards each partition to its replicas. The small rows (the
  dedupe pointers, one partition each, and short messages) are packed up to ``MAX_PARTITIONS``
  partitions and ``MAX_BYTES`` estimated bytes, under both.

A partition's rows bigger than ``MAX_BYTES`` go alone, split at ``MAX_MUTATION_BYTES`` so no
mutation nears the commit log's limit (half a 32 MiB segment). Every statement carries fixed
values and its own write timestamp, so a batch is idempotent and marked so (the driver may
retry it). The driver routes a batch by its first statement's partition (token-aware).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from cassandra.query import BatchStatement, BatchType  # type: ignore[import-untyped]

__all__ = ["MAX_BYTES", "MAX_MUTATION_BYTES", "MAX_PARTITIONS", "ROW_OVERHEAD", "Write", "pack"]

MAX_PARTITIONS = 10
MAX_BYTES = 4 * 1024
MAX_MUTATION_BYTES = 1024 * 1024
ROW_OVERHEAD = 96  # key and fixed-width columns, cell headers and timestamps: an over-estimate


@dataclass(frozen=True, slots=True)
class Write:
    """A bound write, the partition it lands in, and its estimated size in bytes."""

    partition: Hashable
    statement: object
    size: int


def pack(writes: Iterable[Write]) -> list[object]:
    """``writes`` as few requests as the rules of the module docstring allow, in their order."""
    groups: dict[Hashable, list[Write]] = {}
    for write in writes:
        groups.setdefault(write.partition, []).append(write)
    requests: list[object] = []
    shared: list[Write] = []
    partitions = shared_bytes = 0
    for group in groups.values():
        size = sum(write.size for write in group)
        if size > MAX_BYTES:
            requests.extend(_split(group))
            continue
        if partitions == MAX_PARTITIONS or shared_bytes + size > MAX_BYTES:
            requests.append(_request(shared))
            shared, partitions, shared_bytes = [], 0, 0
        shared.extend(group)
        partitions += 1
        shared_bytes += size
    if shared:
        requests.append(_request(shared))
    return requests


def _split(group: list[Write]) -> list[object]:
    """One partition's rows as single-partition batches of at most ``MAX_MUTATION_BYTES``."""
    requests: list[object] = []
    part: list[Write] = []
    part_bytes = 0
    for write in group:
        if part and part_bytes + write.size > MAX_MUTATION_BYTES:
            requests.append(_request(part))
            part, part_bytes = [], 0
        part.append(write)
        part_bytes += write.size
    requests.append(_request(part))
    return requests


def _request(writes: list[Write]) -> object:
    if len(writes) == 1:
        return writes[0].statement
    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    for write in writes:
        batch.add(write.statement)
    batch.is_idempotent = True
    request: object = batch
    return request
