"""README's promise: in a clean clone, `make run` starts the platform and /healthz answers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from launcher.devcluster import READY_PREFIX, Endpoints
from tests.support.platform import REPO_ROOT
from tests.support.processes import start_ready_process


# A fresh clone installs the lock file, compiles the hot path (~1 min) and bundles the web chat first.
@pytest.mark.timeout(600)
def test_make_run_in_a_clean_clone_answers_healthz(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True, timeout=120)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HUBBUB_", "VIRTUAL_ENV"))}
    env |= {"HUBBUB_MQTT_PORT": "0", "HUBBUB_HTTP_PORT": "0"}
    process = start_ready_process(["make", "run"], env=env, cwd=clone, log_path=tmp_path / "make-run.log")
    try:
        line = process.wait_for_line(lambda text: text.startswith(READY_PREFIX), timeout=600)
        http_url = Endpoints.parse(line).http_url
        assert httpx.get(f"{http_url}/healthz", timeout=10).json() == {"status": "ok"}
        assert (clone / "hubbub-data" / "hubbub.db").exists()
    finally:
        process.stop()
