"""The ``hubbub`` command as a person uses it: help, bad settings, parts run apart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.api import ApiClient
from tests.support.mqtt import Device
from tests.support.platform import REPO_ROOT, start_platform


def _hubbub(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_up_help_documents_the_settings() -> None:
    result = _hubbub("up", "--help")
    assert result.returncode == 0
    for variable in (
        "HUBBUB_DATA_DIR",
        "HUBBUB_BIND",
        "HUBBUB_MQTT_PORT",
        "HUBBUB_HTTP_PORT",
        "HUBBUB_DATABASE_URL",
    ):
        assert variable in result.stdout


def test_a_bad_setting_stops_start_up_naming_it() -> None:
    result = _hubbub("up", env=os.environ | {"HUBBUB_HTTP_PORT": "not-a-port"})
    assert result.returncode == 2
    assert "HUBBUB_HTTP_PORT" in result.stderr


def test_broker_and_api_run_apart_on_the_same_settings(tmp_path: Path) -> None:
    broker = start_platform(tmp_path, command="broker")
    api_process = start_platform(
        tmp_path, command="api", extra_env={"HUBBUB_MQTT_PORT": str(broker.mqtt_port)}
    )
    client = ApiClient(api_process.http_url)
    try:
        login = client.new_user()
        assert login.mqtt["port"] == broker.mqtt_port
        device = Device(
            host=broker.mqtt_host,
            port=broker.mqtt_port,
            client_id=login.device_id,
            username=login.user_id,
            password=login.access_token,
        )
        assert device.connect() == 0
        device.close()
        # Sending over REST needs the broker's ingest in the same process: a clear 503, nothing stored.
        other = client.new_user()
        conversation = client.http.post(
            "/v1/conversations", json={"type": "direct", "user_id": other.user_id}, headers=login.headers
        ).json()
        sent = client.http.post(
            f"/v1/conversations/{conversation['id']}/messages",
            json={"cmid": "c1", "text": "hi"},
            headers=login.headers,
        )
        assert sent.status_code == 503
        assert sent.json()["error"]["code"] == "broker_unavailable"
        history = client.http.get(f"/v1/conversations/{conversation['id']}/messages", headers=login.headers)
        assert history.json()["messages"] == []
    finally:
        client.close()
        api_process.stop()
        broker.stop()
