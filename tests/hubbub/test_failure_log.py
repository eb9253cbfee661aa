"""Repeated failures are logged once per kind per interval, with a count, and the recovery once."""

from __future__ import annotations

import logging

import pytest

from hubbub.failure_log import FailureLog, describe_failure


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _DatabaseError(Exception):
    """Shaped like SQLAlchemy's ``DBAPIError``: its text holds the statement, ``orig`` the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"({reason}) [SQL: INSERT INTO messages ...] [parameters: ('a secret text',)]")
        self.orig = OSError(reason)
        self.statement = "INSERT INTO messages ..."


def _fail(log: FailureLog, reason: str) -> None:
    log.failed(_DatabaseError(reason))


def test_a_failure_is_logged_once_then_counted(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    log = FailureLog(logging.getLogger("test.failures"), "commit", interval_s=60.0, clock=clock)
    with caplog.at_level(logging.INFO, "test.failures"):
        for second in range(100):
            clock.now = float(second)
            _fail(log, "database or disk is full")
        clock.now = 130.0
        log.succeeded()
        log.succeeded()
    lines = [(record.getMessage(), record.exc_info is not None) for record in caplog.records]
    full = "_DatabaseError: database or disk is full"
    assert lines == [
        (f"commit failed: {full} (repeats are counted, logged at most every 60 s)", False),
        (f"commit failed 60 times in the last 60 s: {full}", False),
        (f"commit failed 39 times in the last 70 s: {full}", False),
        ("commit works again after 100 failures over 130 s", False),
    ]
    assert "secret" not in caplog.text


def test_each_kind_has_its_first_line(caplog: pytest.LogCaptureFixture) -> None:
    log = FailureLog(logging.getLogger("test.kinds"), "commit", clock=_Clock())
    with caplog.at_level(logging.INFO, "test.kinds"):
        _fail(log, "database is locked")
        _fail(log, "database or disk is full")
        _fail(log, "database is locked")
    assert [record.getMessage().split(" (")[0] for record in caplog.records] == [
        "commit failed: _DatabaseError: database is locked",
        "commit failed: _DatabaseError: database or disk is full",
    ]
    assert log.failing


def test_a_description_is_one_line_without_the_statement() -> None:
    assert describe_failure(_DatabaseError("disk I/O error")) == "_DatabaseError: disk I/O error"
    assert describe_failure(ValueError("first\nsecond")) == "ValueError: first"


def test_the_first_failure_of_a_bug_has_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    log = FailureLog(logging.getLogger("test.bug"), "commit", clock=_Clock())
    with caplog.at_level(logging.INFO, "test.bug"):
        log.failed(KeyError("seq"))
    assert [record.exc_info is not None for record in caplog.records] == [True]


def test_a_database_errors_traceback_is_for_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    log = FailureLog(logging.getLogger("test.debug"), "commit", clock=_Clock())
    with caplog.at_level(logging.DEBUG, "test.debug"):
        _fail(log, "database is locked")
    assert [(record.levelno, record.exc_info is not None) for record in caplog.records] == [
        (logging.ERROR, False),
        (logging.DEBUG, True),
    ]
