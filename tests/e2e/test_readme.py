"""README's promise: in a clean clone, `make run` starts the platform and /healthz answers."""

from __future__ import annotations

import httpx
import pytest

from launcher.devcluster import READY_PREFIX, Endpoints
from tests.support.clean_clone import CleanCloneRun


# A fresh clone installs the lock file, compiles the hot path (~1 min) and bundles the web chat
# first; the session started it early (tests/conftest.py: clean_clone_run), so most of that is
# done by the time this test runs.
@pytest.mark.timeout(600)
def test_make_run_in_a_clean_clone_answers_healthz(clean_clone_run: CleanCloneRun) -> None:
    line = clean_clone_run.process.wait_for_line(lambda text: text.startswith(READY_PREFIX), timeout=600)
    http_url = Endpoints.parse(line).http_url
    assert httpx.get(f"{http_url}/healthz", timeout=10).json() == {"status": "ok"}
    assert (clean_clone_run.clone / "hubbub-data" / "hubbub.db").exists()
