"""The real platform (``hubbub up`` or one part) in a subprocess on free ports.

The process is the launcher's ``HubbubProcess`` (what ``make cluster`` runs, with its ready line
read by ``Endpoints``): one way to start, wait for, kill and read the log of a Hubbub process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from launcher.devcluster import Endpoints, HubbubProcess

__all__ = ["CHEAP_PASSWORD_HASH", "REPO_ROOT", "Platform", "start_platform"]

REPO_ROOT = Path(__file__).resolve().parents[2]
# argon2id at its smallest memory (32 KiB) instead of production's 64 MiB: a sign-up then costs
# well under a millisecond instead of 1-2.5 s on a loaded two-core machine, and the suite signs
# up thousands of users. Every test platform and cluster process hashes passwords this cheaply.
CHEAP_PASSWORD_HASH = {"HUBBUB_PASSWORD_HASH_MEMORY_KIB": "32"}


@dataclass
class Platform:
    """A running platform and where to reach it."""

    process: HubbubProcess
    data_dir: Path

    @property
    def endpoints(self) -> Endpoints:
        """What its ready line announced."""
        return self.process.ready

    @property
    def http_url(self) -> str:
        """``http://host:port`` of its HTTP side."""
        return self.endpoints.http_url

    @property
    def mqtt_host(self) -> str:
        """Host of MQTT over TCP."""
        return self.endpoints.mqtt[0]

    @property
    def mqtt_port(self) -> int:
        """Port of MQTT over TCP."""
        return self.endpoints.mqtt[1]

    @property
    def ws_url(self) -> str:
        """MQTT over WebSocket (on the HTTP port unless it announced a port of its own)."""
        return self.endpoints.ws_url

    def stop(self) -> int:
        """Stop gracefully; the exit code."""
        return self.process.stop()


def start_platform(
    data_dir: Path, *, command: str = "up", extra_env: dict[str, str] | None = None
) -> Platform:
    """Start ``hubbub <command>`` with its data (and its log) in ``data_dir`` on ephemeral ports."""
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
    env |= CHEAP_PASSWORD_HASH
    env |= extra_env or {}
    process = HubbubProcess(command, command, env, data_dir)
    process.start()
    try:
        process.wait_ready()
    except BaseException:
        process.kill()
        raise
    return Platform(process, data_dir)
