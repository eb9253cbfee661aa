"""The CLI refuses, in one line and before starting anything, what a cluster cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.platform import REPO_ROOT

POSTGRES = "postgresql+asyncpg://hubbub@127.0.0.1:1/hubbub"


def hubbub(command: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {key: value for key, value in os.environ.items() if not key.startswith("HUBBUB_")}
    base |= {"HUBBUB_DATA_DIR": str(tmp_path), "HUBBUB_CONFIG_FILE": str(tmp_path / "absent.toml")}
    return subprocess.run(
        [sys.executable, "-m", "launcher.cli", command],
        env=base | env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", ["persister", "notifier"])
def test_cluster_processes_need_nats(tmp_path: Path, command: str) -> None:
    done = hubbub(command, tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        f"hubbub: `hubbub {command}` is a cluster process: set HUBBUB_NATS_URL (on one node `hubbub up` "
        f"and `hubbub broker` run the {command} inside)\n"
    )


def test_up_is_one_node(tmp_path: Path) -> None:
    done = hubbub("up", tmp_path, HUBBUB_NATS_URL="nats://127.0.0.1:4222", HUBBUB_DATABASE_URL=POSTGRES)
    assert done.returncode == 2
    assert done.stderr.startswith("hubbub: `hubbub up` is one node; with HUBBUB_NATS_URL run `hubbub broker`")
    assert done.stderr.count("\n") == 1


def test_a_cluster_on_sqlite_is_refused(tmp_path: Path) -> None:
    done = hubbub("broker", tmp_path, HUBBUB_NATS_URL="nats://127.0.0.1:4222")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "a cluster (HUBBUB_NATS_URL) needs PostgreSQL for accounts" in done.stderr
    assert not (tmp_path / "hubbub.db").exists()
