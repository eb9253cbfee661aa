"""Which database errors are "not now" (503 ``unavailable``) and which are bugs (500).

The whole path, a real database refusing writes under a running platform, is in
``tests/e2e/test_storage_failure.py``; here, the classification of the errors the drivers raise.
"""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError

from api.errors import database_unavailable


class _PostgresError(Exception):
    """What asyncpg's errors look like through SQLAlchemy's adapter: a ``sqlstate``."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    "sqlstate",
    ["53100", "08006", "57P01", "25006", "55P03"],  # disk full, lost, shut down, read-only, lock
)
def test_a_server_that_cannot_write_now_is_unavailable(sqlstate: str) -> None:
    assert database_unavailable(DBAPIError("INSERT ...", {}, _PostgresError(sqlstate)))


def test_sqlite_full_or_locked_is_unavailable() -> None:
    error = sqlite3.OperationalError("database or disk is full")
    assert database_unavailable(OperationalError("INSERT ...", {}, error))


@pytest.mark.parametrize(
    "error",
    [
        IntegrityError("INSERT ...", {}, _PostgresError("23505")),
        ProgrammingError("SELECT ...", {}, _PostgresError("42P01")),
        DBAPIError("SELECT ...", {}, _PostgresError("22P02")),
        ValueError("not a database error"),
    ],
)
def test_a_bug_stays_a_bug(error: Exception) -> None:
    assert not database_unavailable(error)
