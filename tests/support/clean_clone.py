"""README's ``make run`` in a clean clone of this repository, as a newcomer would type it.

A fresh clone installs the lock file, compiles the hot path with mypyc and bundles the web chat
before the platform starts: minutes of one core's work. The session starts it early
(``tests/support/early.py``) so that work overlaps other tests, at the lowest CPU priority (nice
19) so that it takes only what they leave idle and never slows the tests that run meanwhile (the
cluster's lease tests time renewals); ``tests/e2e/test_readme.py`` hands it back normal priority
(``hurry``), then waits for its ready line and checks what it serves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.platform import REPO_ROOT
from tests.support.processes import IDLE_PRIORITY, ReadyProcess, start_ready_process

__all__ = ["CleanCloneRun", "start_make_run_in_clean_clone"]

_CLONE_TIMEOUT_S = 120


@dataclass
class CleanCloneRun:
    """``make run`` started in ``clone`` (a fresh ``git clone`` of the repository under ``root``)."""

    root: Path
    clone: Path
    process: ReadyProcess

    def hurry(self) -> None:
        """``make run`` and what it started so far back to normal priority (its test is waiting now).

        Raising a priority needs root (as on CI and the project's machines); elsewhere it stays idle.
        """
        self.process.renice(0)

    def stop(self) -> None:
        """Stop ``make run`` and everything it started; remove the clone."""
        try:
            self.process.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_make_run_in_clean_clone() -> CleanCloneRun:
    """Clone the committed repository into a temp dir and start ``make run`` there on free ports, niced."""
    root = Path(tempfile.mkdtemp(prefix="hubbub-readme-"))
    clone = root / "clone"
    try:
        subprocess.run(
            ["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True, timeout=_CLONE_TIMEOUT_S
        )
        env = {
            key: value for key, value in os.environ.items() if not key.startswith(("HUBBUB_", "VIRTUAL_ENV"))
        }
        env |= {"HUBBUB_MQTT_PORT": "0", "HUBBUB_HTTP_PORT": "0"}
        process = start_ready_process(
            ["make", "run"], env=env, cwd=clone, log_path=root / "make-run.log", niceness=IDLE_PRIORITY
        )
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return CleanCloneRun(root, clone, process)
