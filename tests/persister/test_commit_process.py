"""The SQLite writer process: replaced when it dies, with nothing lost or stored twice."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import persister
from hubbub.envelope import AcceptedMessage, CommitResult
from hubbub.errors import CommitFailed
from persister import SqlMessageStore
from persister.commit_process import ProcessCommitter
from persister.sql_database import create_engine, message_committer
from tests.support.schema import migrate


def _accepted(message_id: int, cmid: str) -> AcceptedMessage:
    return AcceptedMessage(1, message_id, 7, "dev1", cmid, f"text {cmid}", 1_700_000_000_000)


async def test_a_killed_writer_process_is_replaced_and_seqs_stay_dense(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await migrate(engine, persister.MIGRATIONS)
    committer = message_committer(engine)
    assert isinstance(committer, ProcessCommitter)  # a SQLite file commits in a process of its own
    store = SqlMessageStore(engine, committer)
    try:
        [first] = await store.commit([_accepted(1, "a")])
        killed = committer.pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        # The batch sent to the dead process fails (nothing acknowledged: its sender resends)
        # unless the death was noticed first; either way a resend is stored once, next in line.
        results: list[CommitResult] = []
        for _ in range(2):
            try:
                results = await store.commit([_accepted(2, "b")])
                break
            except CommitFailed:
                continue
        assert committer.pid not in {None, killed}
        assert [(r.message.seq, r.duplicate) for r in [first, *results]] == [(1, False), (2, False)]
        [again] = await store.commit([_accepted(3, "b")])  # a later resend of b
        assert (again.duplicate, again.message.message_id, again.message.seq) == (True, 2, 2)
        assert [m.cmid for m in (await store.page(1, limit=10)).messages] == ["a", "b"]
    finally:
        await store.close()
        await engine.dispose()
