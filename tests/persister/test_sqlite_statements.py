"""The SQLite writer process's commits straight on ``sqlite3``: seqs, resends, a failed COMMIT, fences."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import persister
from hubbub.envelope import AcceptedMessage, CommittedMessage
from hubbub.errors import CommitFailed
from hubbub.stores import Fence
from persister.sql_commit import BatchCommitter, SqliteStatements, commit_outcomes
from persister.sql_database import create_engine
from tests.support.schema import migrate


class CommitRefused(Exception):
    """Raised in place of a COMMIT that fails (a full disk), after rolling the transaction back."""


class RefusingConnection(sqlite3.Connection):
    """A ``sqlite3`` connection whose next COMMIT fails once ``refuse`` is set."""

    refuse = False

    def commit(self) -> None:
        if self.refuse:
            self.refuse = False
            self.rollback()
            raise CommitRefused
        super().commit()


@pytest.fixture
async def database(tmp_path: Path) -> Path:
    path = tmp_path / "store.db"
    schema = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await migrate(schema, persister.MIGRATIONS)
    finally:
        await schema.dispose()
    return path


@pytest.fixture
def db(database: Path) -> Iterator[RefusingConnection]:
    connection = sqlite3.connect(database, factory=RefusingConnection)
    yield connection
    connection.close()


def _accepted(conversation_id: int, index: int, cmid: str | None = None) -> AcceptedMessage:
    cmid = cmid or f"c{index}"
    return AcceptedMessage(conversation_id, 100 + index, 7, "dev1", cmid, f"text {index}", 1_700_000_000_000)


def _stored(db: sqlite3.Connection) -> list[tuple[int, int, str]]:
    rows = db.execute("SELECT conversation_id, seq, cmid FROM messages ORDER BY conversation_id, seq")
    return [(int(cid), int(seq), str(cmid)) for cid, seq, cmid in rows]


def test_seqs_follow_what_is_stored_per_conversation(db: RefusingConnection) -> None:
    statements = SqliteStatements(db)
    first = commit_outcomes(BatchCommitter(), statements, [_accepted(1, 0), _accepted(2, 1), _accepted(1, 2)])
    # A new writer (a restarted process) reads each conversation's last seq back.
    again = commit_outcomes(BatchCommitter(), statements, [_accepted(2, 3), _accepted(1, 4)])
    assert (first, again) == ([1, 1, 2], [2, 3])
    assert _stored(db) == [(1, 1, "c0"), (1, 2, "c2"), (1, 3, "c4"), (2, 1, "c1"), (2, 2, "c3")]


def test_a_resend_is_answered_with_the_stored_original_and_stored_once(db: RefusingConnection) -> None:
    statements = SqliteStatements(db)
    committer = BatchCommitter()
    commit_outcomes(committer, statements, [_accepted(1, 0)])
    # The resend of c0 refuses the batch's insert; committed again with a lookup, the new one gets seq 2.
    resent, new, twice = commit_outcomes(
        committer, statements, [_accepted(1, 5, "c0"), _accepted(1, 6), _accepted(1, 7, "c6")]
    )
    original = CommittedMessage(1, 100, 1, 7, "c0", "text 0", 1_700_000_000_000)
    assert (resent, new) == (original, 2)
    assert twice == CommittedMessage(1, 106, 2, 7, "c6", "text 6", 1_700_000_000_000)  # resent in the batch
    assert _stored(db) == [(1, 1, "c0"), (1, 2, "c6")]


def test_a_failed_commit_stores_nothing_and_forgets_the_seqs_it_took(db: RefusingConnection) -> None:
    statements = SqliteStatements(db)
    committer = BatchCommitter()
    commit_outcomes(committer, statements, [_accepted(1, 0)])
    db.refuse = True
    with pytest.raises(CommitRefused):
        commit_outcomes(committer, statements, [_accepted(1, 1), _accepted(1, 2)])
    assert commit_outcomes(committer, statements, [_accepted(1, 3)]) == [2]
    assert _stored(db) == [(1, 1, "c0"), (1, 2, "c3")]


def test_a_fence_is_refused_and_nothing_is_stored(db: RefusingConnection) -> None:
    with pytest.raises(CommitFailed, match="single node"):
        commit_outcomes(BatchCommitter(), SqliteStatements(db), [_accepted(1, 0)], Fence(shard=3, epoch=1))
    assert _stored(db) == []
