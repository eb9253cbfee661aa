"""Logging a failure that repeats: once per kind per interval, with a count, not once per attempt.

Why: with the disk full every batch of messages fails to commit, several times a second, and
a traceback per batch filled 13.7 MB of log in 6.5 minutes while saying one thing. Here the
first failure of a kind is logged with its traceback (at DEBUG for a database error, whose
traceback holds its statement's values), the repeats are summed up at most once
per interval ("commit failed 57 times in the last 60 s: OperationalError: database or disk
is full"), and the first success after failures is logged once, so an operator sees when the
trouble began, that it went on, and when it ended.

The summary of a kind is written when the next failure or the recovery comes after the
interval: no timer runs, so a quiet system logs nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FailureLog", "describe_failure"]

_MAX_DESCRIPTION = 200


def describe_failure(exc: BaseException) -> str:
    """``Type: reason`` on one line, without the statement and parameters a database error carries.

    A SQLAlchemy ``DBAPIError`` prints its SQL and bound parameters (message texts, tokens):
    only the driver's own message (``exc.orig``) is kept.
    """
    cause = getattr(exc, "orig", None)
    reason = str(cause if isinstance(cause, BaseException) else exc).strip()
    first_line = reason.splitlines()[0] if reason else ""
    return f"{type(exc).__name__}: {first_line[:_MAX_DESCRIPTION]}"


@dataclass
class _Kind:
    unreported: int  # failures since the last line about this kind
    since: float  # when that last line was written


class FailureLog:
    """Logs the failures of one ``action`` (``"commit"``) on ``logger``, throttled per kind."""

    def __init__(
        self,
        logger: logging.Logger,
        action: str,
        *,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._action = action
        self._interval_s = interval_s
        self._clock = clock
        self._kinds: dict[str, _Kind] = {}
        self._failures = 0
        self._first_at = 0.0

    @property
    def failing(self) -> bool:
        """Whether the last attempt failed (a failure and no success since)."""
        return self._failures > 0

    def failed(self, exc: BaseException, *, traceback: bool = True) -> None:
        """One more failure: logged if it is the first of its kind or its interval is over."""
        now = self._clock()
        if self._failures == 0:
            self._first_at = now
        self._failures += 1
        kind = describe_failure(exc)
        seen = self._kinds.get(kind)
        if seen is None:
            self._kinds[kind] = _Kind(0, now)
            # A database error's traceback repeats its statement's values (message texts):
            # those are for DEBUG only (exc.statement is SQLAlchemy's StatementError's).
            private = getattr(exc, "statement", None) is not None
            self._logger.error(
                "%s failed: %s (repeats are counted, logged at most every %.0f s)",
                self._action,
                kind,
                self._interval_s,
                exc_info=exc if traceback and not private else None,
            )
            if traceback and private:
                self._logger.debug("%s failed: %s", self._action, kind, exc_info=exc)
            return
        seen.unreported += 1
        if now - seen.since >= self._interval_s:
            self._summarise(kind, seen, now)

    def succeeded(self) -> None:
        """The action worked: after failures, say so once (with the counts not yet logged)."""
        if self._failures == 0:
            return
        now = self._clock()
        for kind, seen in self._kinds.items():
            if seen.unreported:
                self._summarise(kind, seen, now)
        self._logger.warning(
            "%s works again after %d failures over %.0f s",
            self._action,
            self._failures,
            now - self._first_at,
        )
        self._kinds.clear()
        self._failures = 0

    def _summarise(self, kind: str, seen: _Kind, now: float) -> None:
        self._logger.error(
            "%s failed %d times in the last %.0f s: %s", self._action, seen.unreported, now - seen.since, kind
        )
        seen.unreported = 0
        seen.since = now
