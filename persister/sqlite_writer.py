"""``python -m persister.sqlite_writer PATH LOG_LEVEL``: the message store's SQLite writer process.

Started by the broker's process (``persister.sql_database.message_committer`` builds the
``persister.commit_process.ProcessCommitter`` that runs it), never by hand: it commits the
batches it reads on stdin to the SQLite file at PATH and answers on stdout, until stdin
closes (its parent closes it at shutdown, or dies). Logs go to stderr, which it shares with
its parent.

WAL checkpoints run in a thread of their own, every ``CHECKPOINT_EVERY_S`` (``Checkpointer``),
not in the commit that crosses SQLite's 1,000-frame mark: a chat batch dirties about one page
per message, mostly the same index pages commit after commit, and a checkpoint copies each
page once however often it changed. Checkpointing twice a second instead of every ~1,000
frames copied a fraction of the pages at the chat benchmark's rate, and no commit (so no ack)
waits for a checkpoint's copies and fsyncs any more. The writer's own connection still
checkpoints past ``BACKSTOP_FRAMES``, should the thread ever fall that far behind.
"""

from __future__ import annotations

import gc
import logging
import signal
import sqlite3
import sys
import threading

from sqlalchemy import Engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection

from config import configure_logging
from hubbub.failure_log import FailureLog
from persister.commit_process import serve
from persister.sql_database import SQLITE_BUSY_TIMEOUT_S, sqlite_writer_engine

__all__ = ["BACKSTOP_FRAMES", "CHECKPOINT_EVERY_S", "Checkpointer", "checkpoint", "main", "writer_engine"]

logger = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 0.5
BACKSTOP_FRAMES = 50_000  # ~200 MB of WAL with 4 KB pages
_BUSY_TIMEOUT_S = 5.0


class Checkpointer:
    """A thread that copies the WAL of the SQLite file at ``path`` into it every ``every_s``.

    PASSIVE checkpoints: they never block the writer nor a reader, and copy what they can
    (SQLite releases the GIL meanwhile). ``stop`` ends the thread and waits for it.
    """

    def __init__(self, path: str, every_s: float = CHECKPOINT_EVERY_S) -> None:
        self._path = path
        self._every_s = every_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpointer", daemon=True)
        self._failures = FailureLog(logger, "a WAL checkpoint")

    def start(self) -> None:
        """Start checkpointing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop checkpointing (a checkpoint under way finishes first)."""
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        connection = sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            while not self._stopping.wait(self._every_s):
                try:
                    checkpoint(connection)
                except sqlite3.Error as exc:
                    self._failures.failed(exc)  # the backstop checkpoints meanwhile
                else:
                    self._failures.succeeded()
        finally:
            connection.close()


def checkpoint(connection: sqlite3.Connection) -> tuple[int, int]:
    """One PASSIVE checkpoint: (frames in the WAL, frames now copied into the database file)."""
    _busy, frames, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(frames), int(copied)


def writer_engine(path: str, busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S) -> Engine:
    """The writer's engine on ``path``: its commits checkpoint only past ``BACKSTOP_FRAMES``."""
    engine = sqlite_writer_engine(path, busy_timeout_s=busy_timeout_s)
    event.listen(engine, "connect", _checkpoint_only_as_backstop)
    return engine


def _checkpoint_only_as_backstop(dbapi_connection: DBAPIConnection, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_FRAMES}")
    cursor.close()


def main(argv: list[str]) -> int:
    """Serve until the parent closes the pipe; 2 on a wrong command line."""
    if len(argv) != 3:  # noqa: PLR2004 - PATH, LOG_LEVEL and BUSY_TIMEOUT_S
        print("usage: python -m persister.sqlite_writer PATH LOG_LEVEL BUSY_TIMEOUT_S", file=sys.stderr)  # noqa: T201
        return 2
    path, log_level, busy_timeout_s = argv[0], argv[1], float(argv[2])
    # Ctrl-C in a terminal, or a supervisor's SIGTERM, reaches the whole process group; the
    # parent then commits what it accepted before closing our stdin, so we wait for that EOF.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(log_level)
    engine = writer_engine(path, busy_timeout_s)
    checkpointer = Checkpointer(path)
    gc.freeze()  # modules and the engine live as long as the process: no collection need walk them
    checkpointer.start()
    try:
        serve(engine, sys.stdin.buffer, sys.stdout.buffer)
    finally:
        checkpointer.stop()
        engine.dispose()
    logger.debug("stdin closed; writer process done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
