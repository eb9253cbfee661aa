"""The real platform (``hubbub up`` or one part) in a subprocess on free ports."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import ReadyProcess, start_ready_process

__all__ = ["REPO_ROOT", "Platform", "parse_ready_line", "start_platform"]

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_PREFIX = "hubbub ready:"


def parse_ready_line(line: str) -> dict[str, str]:
    """``hubbub ready: mqtt=127.0.0.1:1883 http=http://...`` as a dict."""
    fields = line.removeprefix(READY_PREFIX).split()
    return dict(field.split("=", 1) for field in fields)


@dataclass
class Platform:
    """A running platform and where to reach it."""

    process: ReadyProcess
    data_dir: Path
    http_url: str
    mqtt_host: str
    mqtt_port: int

    @property
    def ws_url(self) -> str:
        """MQTT over WebSocket on the HTTP port."""
        return self.http_url.replace("http://", "ws://") + "/mqtt"

    def stop(self) -> int:
        """Stop gracefully; the exit code."""
        return self.process.stop()


def start_platform(
    data_dir: Path, *, command: str = "up", extra_env: dict[str, str] | None = None
) -> Platform:
    """Start ``hubbub <command>`` with its data in ``data_dir`` on ephemeral ports."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUBBUB_")}
    env |= {
        "HUBBUB_DATA_DIR": str(data_dir),
        "HUBBUB_BIND": "127.0.0.1",
        "HUBBUB_MQTT_PORT": "0",
        "HUBBUB_HTTP_PORT": "0",
        "HUBBUB_BROKER_WS_PORT": "0",
        "HUBBUB_LOG_LEVEL": "INFO",
        "HUBBUB_CONNECT_TIMEOUT_S": "2",
        "HUBBUB_PRESENCE_GRACE_S": "2",
        # every test logs in from 127.0.0.1; the per-address limit has its own test
        "HUBBUB_LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE": "1000000",
    }
    env |= extra_env or {}
    process = start_ready_process(
        [sys.executable, "-m", "launcher.cli", command],
        env=env,
        cwd=REPO_ROOT,
        log_path=data_dir / f"{command}.log",
    )
    endpoints = parse_ready_line(process.wait_for_line(lambda line: line.startswith(READY_PREFIX)))
    host, port = endpoints["mqtt"].rsplit(":", 1) if "mqtt" in endpoints else ("", "0")
    return Platform(process, data_dir, endpoints.get("http", ""), host, int(port))
