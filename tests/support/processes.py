"""Start processes that are not Hubbub's (Cassandra, ``make run``, the chat CLI) and wait for a line.

Hubbub's own processes are ``launcher.devcluster.HubbubProcess`` (``tests/support/platform.py``).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

__all__ = ["IDLE_PRIORITY", "ReadyProcess", "start_ready_process"]

READY_TIMEOUT_S = 60.0
IDLE_PRIORITY = 19  # nice: the CPU other processes leave idle, for work started ahead of its test


class ReadyProcess:
    """A child process whose stdout is drained by a thread; stderr goes to ``log_path``."""

    def __init__(
        self, process: subprocess.Popen[str], log_path: Path, lines: queue.Queue[str | None]
    ) -> None:
        self.process = process
        self.log_path = log_path
        self._lines = lines

    @classmethod
    def attach(cls, process: subprocess.Popen[str], log_path: Path) -> ReadyProcess:
        """Follow the stdout of a process started elsewhere (one that also needs stdin)."""
        lines: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        threading.Thread(target=_drain, args=(process.stdout, lines), daemon=True).start()
        return cls(process, log_path, lines)

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = READY_TIMEOUT_S) -> str:
        """The first stdout line matching ``predicate``; fails with the log if the process dies."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no ready line within {timeout}s; log:\n{self.log()}") from None
            if line is None:
                raise AssertionError(f"process exited ({self.process.poll()}); log:\n{self.log()}")
            if predicate(line):
                return line

    def log(self) -> str:
        """What the process wrote to stderr so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def renice(self, niceness: int) -> None:
        """Set the CPU priority of the process's whole group (what it started so far included).

        Raising a priority needs root (as on CI and the project's machines); elsewhere it stays.
        """
        with contextlib.suppress(PermissionError, ProcessLookupError):
            os.setpriority(os.PRIO_PGRP, self.process.pid, niceness)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the whole process group and wait for the exit code."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(timeout=timeout)


def _drain(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    with stream:
        for line in iter(stream.readline, ""):
            lines.put(line.rstrip("\n"))
    lines.put(None)


def start_ready_process(
    argv: Sequence[str], *, env: dict[str, str], cwd: Path, log_path: Path, niceness: int = 0
) -> ReadyProcess:
    """Start ``argv`` in its own process group (so a kill reaches its children too), at ``niceness``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            ["nice", "-n", str(niceness), *argv] if niceness else list(argv),
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_drain, args=(process.stdout, lines), daemon=True).start()
    return ReadyProcess(process, log_path, lines)
