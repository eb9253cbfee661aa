"""The SQLite writer process's checkpoints: by a thread of its own, the commits' only as a backstop."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import persister
from hubbub.envelope import AcceptedMessage
from persister.sql_commit import BatchCommitter, commit_batch
from persister.sql_database import create_engine
from persister.sqlite_writer import BACKSTOP_FRAMES, Checkpointer, checkpoint, writer_engine
from tests.support.schema import migrate


async def _migrated(path: Path) -> None:
    schema = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await migrate(schema, persister.MIGRATIONS)
    finally:
        await schema.dispose()


async def test_commits_leave_the_wal_to_the_checkpointer_which_copies_it_all(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    await _migrated(path)
    engine = writer_engine(str(path))
    committer = BatchCommitter()
    probe = sqlite3.connect(path)
    try:
        with engine.connect() as connection:
            autocheckpoint = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
        with engine.connect() as connection:
            for batch in range(30):  # well past SQLite's default of 1,000 frames
                messages = [
                    AcceptedMessage(
                        k, batch * 100 + k, 7, "dev1", f"c{batch}-{k}", "x" * 500, 1_700_000_000_000
                    )
                    for k in range(100)
                ]
                commit_batch(committer, connection, messages)
            # Checked while the writer is open: the last connection to close checkpoints anyway.
            frames, copied = checkpoint(probe)
            (stored,) = probe.execute("SELECT count(*) FROM messages").fetchone()
    finally:
        probe.close()
        engine.dispose()
    assert autocheckpoint == BACKSTOP_FRAMES
    assert frames > 1_000  # no commit checkpointed (one would have reset the WAL)
    assert (copied, stored) == (frames, 3_000)


async def test_a_checkpointer_stops_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    await _migrated(path)
    checkpointer = Checkpointer(str(path), every_s=3600)
    checkpointer.start()
    checkpointer.stop()  # returns once the thread is over, without waiting the hour
