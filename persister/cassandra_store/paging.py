"""Pages of history as seq arithmetic: seqs are dense, so a page is an exact seq range.

``plan_page`` turns a request (``before``/``after``/``around``, ``limit``) and a head into
the range ``first..last``; ``bucket_ranges`` splits that range by partition (bucket), so the
store reads it with key-range queries: no LIMIT probing, no ALLOW FILTERING.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["PagePlan", "bucket_ranges", "plan_page"]


class PagePlan(NamedTuple):
    """Seqs ``first..last`` (inclusive; empty when ``first > last``) and whether more lie beyond."""

    first: int
    last: int
    has_more: bool


def plan_page(
    head: int, *, limit: int, before: int | None = None, after: int | None = None, around: int | None = None
) -> PagePlan:
    """The page ``MessageStore.page`` returns when seqs ``1..head`` exist.

    Exactly what the SQL store's ``LIMIT n + 1`` probes return, including ``around`` keeping
    at most ``limit // 2`` older messages.
    """
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    if around is not None:
        half = limit // 2
        older_last, newer_first = min(around - 1, head), max(around, 1)
        older = min(half + 1, max(older_last, 0))
        newer = min(limit - min(half, older) + 1, max(head - newer_first + 1, 0))
        kept_older = min(half, older)
        kept_newer = min(newer, limit - kept_older)
        first = older_last - kept_older + 1 if kept_older else newer_first
        return PagePlan(first, first + kept_older + kept_newer - 1, older > half or newer > kept_newer)
    if after is not None:
        first = max(after + 1, 1)
        last = min(first + limit - 1, head)
        return PagePlan(first, last, last < head)
    last = head if before is None else min(before - 1, head)
    first = max(last - limit + 1, 1)
    return PagePlan(first, last, first > 1)


def bucket_ranges(first: int, last: int, bucket_size: int) -> list[tuple[int, int, int]]:
    """``(bucket, first, last)`` for each bucket that seqs ``first..last`` touch, oldest first."""
    ranges: list[tuple[int, int, int]] = []
    while first <= last:
        bucket = first // bucket_size
        end = min(last, (bucket + 1) * bucket_size - 1)
        ranges.append((bucket, first, end))
        first = end + 1
    return ranges
