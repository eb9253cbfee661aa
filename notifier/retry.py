"""How long to wait before trying a push again, and when to stop.

Exponential backoff with "equal jitter" (half the step fixed, half random): retries of many
pushes that failed together (a provider's 503) spread out instead of returning as one wave,
yet no retry comes back sooner than half its step. A provider's ``Retry-After`` is a floor;
one asking for longer than ``max_delay`` ends the retries, since a push that late is stale.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_attempts`` attempts in all; steps ``base_delay * 2**n`` capped at ``max_delay``."""

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay <= 0 or self.max_delay < self.base_delay:
            raise ValueError("retry policy needs max_attempts >= 1 and 0 < base_delay <= max_delay")

    def delay(self, attempts: int, retry_after: float | None, jitter: float) -> float | None:
        """Seconds to wait after ``attempts`` failed attempts, or ``None`` to give up.

        ``jitter`` is a random number in [0, 1).
        """
        if attempts >= self.max_attempts:
            return None
        if retry_after is not None and retry_after > self.max_delay:
            return None
        step = min(self.max_delay, self.base_delay * 2.0 ** (attempts - 1))
        wait = step / 2 + jitter * step / 2
        return max(wait, retry_after or 0.0)
