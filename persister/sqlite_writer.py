"""``python -m persister.sqlite_writer PATH LOG_LEVEL``: the message store's SQLite writer process.

Started by the broker's process (``persister.sql_database.message_committer`` builds the
``persister.commit_process.ProcessCommitter`` that runs it), never by hand: it commits the
batches it reads on stdin to the SQLite file at PATH and answers on stdout, until stdin
closes (its parent closes it at shutdown, or dies). Logs go to stderr, which it shares with
its parent.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys

from config import configure_logging
from persister.commit_process import serve
from persister.sql_database import sqlite_writer_engine

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Serve until the parent closes the pipe; 2 on a wrong command line."""
    if len(argv) != 2:  # noqa: PLR2004 - PATH and LOG_LEVEL
        print("usage: python -m persister.sqlite_writer PATH LOG_LEVEL", file=sys.stderr)  # noqa: T201
        return 2
    path, log_level = argv
    # Ctrl-C in a terminal, or a supervisor's SIGTERM, reaches the whole process group; the
    # parent then commits what it accepted before closing our stdin, so we wait for that EOF.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(log_level)
    engine = sqlite_writer_engine(path)
    gc.freeze()  # modules and the engine live as long as the process: no collection need walk them
    try:
        serve(engine, sys.stdin.buffer, sys.stdout.buffer)
    finally:
        engine.dispose()
    logging.getLogger(__name__).debug("stdin closed; writer process done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
