"""``hubbub up`` where it cannot keep its data: one clear line naming the path, a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.platform import REPO_ROOT


def _up(data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUBBUB_")}
    env |= {
        "HUBBUB_DATA_DIR": str(data_dir),
        "HUBBUB_BIND": "127.0.0.1",
        "HUBBUB_MQTT_PORT": "0",
        "HUBBUB_HTTP_PORT": "0",
        "HUBBUB_BROKER_WS_PORT": "0",
    }
    return subprocess.run(
        [sys.executable, "-m", "launcher.cli", "up"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _only_complaint(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    complaints = [line for line in stderr.splitlines() if line.startswith("hubbub:")]
    assert len(complaints) == 1, stderr
    return complaints[0]


# Permissions are no obstacle to root (tests may run as root): a path through a regular file,
# or a database path that is a directory, cannot be written by anyone.
@pytest.mark.parametrize("inside", ["a-file/data", "a-file"])
def test_a_data_dir_that_cannot_be_created_stops_start_up_in_one_line(tmp_path: Path, inside: str) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    result = _up(tmp_path / inside)
    assert result.returncode != 0
    complaint = _only_complaint(result.stderr)
    assert str(tmp_path / inside) in complaint


def test_a_database_file_that_cannot_be_opened_stops_start_up_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "hubbub.db").mkdir()
    result = _up(tmp_path)
    assert result.returncode != 0
    complaint = _only_complaint(result.stderr)
    assert str(tmp_path / "hubbub.db") in complaint
    assert "unable to open database file" in complaint
