from __future__ import annotations

import stat
from pathlib import Path

import pytest

from config import load_settings, resolve_secret
from hubbub.errors import SettingsError


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HUBBUB_MQTT_PORT", "11883")
    monkeypatch.setenv("HUBBUB_DATA_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.mqtt_port == 11883
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/hubbub.db"


def test_a_toml_file_is_read_below_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config_file = tmp_path / "hubbub.toml"
    config_file.write_text("http_port = 9000\nmqtt_port = 2883\n")
    monkeypatch.setenv("HUBBUB_CONFIG_FILE", str(config_file))
    monkeypatch.setenv("HUBBUB_MQTT_PORT", "3883")
    settings = load_settings()
    assert (settings.http_port, settings.mqtt_port) == (9000, 3883)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HUBBUB_MQTT_PORT", "70000"),
        ("HUBBUB_HTTP_PORT", "eighty"),
        ("HUBBUB_DATABASE_URL", "mysql://x"),
        ("HUBBUB_NODE_ID", "5000"),
    ],
)
def test_a_bad_setting_names_itself(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


@pytest.mark.parametrize("secret", ["changeme", "secret", "too-short-but-not-a-placeholder"])
def test_placeholder_or_short_secrets_are_refused(tmp_path: Path, secret: str) -> None:
    settings = load_settings(data_dir=tmp_path, secret_key=secret)
    with pytest.raises(SettingsError, match="HUBBUB_SECRET_KEY"):
        resolve_secret(settings)


def test_a_generated_secret_is_private_and_stable(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    first = resolve_secret(settings)
    assert len(first) >= 32
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600
    assert resolve_secret(settings) == first


def test_a_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    resolve_secret(settings)
    (tmp_path / "secret.key").chmod(0o644)
    with pytest.raises(SettingsError, match="readable by others"):
        resolve_secret(settings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HUBBUB_HTTP_IDLE_TIMEOUT_S", "0"),
        ("HUBBUB_HTTP_HEADER_TIMEOUT_S", "-1"),
        ("HUBBUB_HTTP_BODY_TIMEOUT_S", "0"),
        ("HUBBUB_HTTP_MAX_CONNECTIONS_PER_ADDRESS", "0"),
        ("HUBBUB_HTTP_MAX_CONNECTIONS", "0"),
    ],
)
def test_http_limits_must_be_positive(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_the_password_hash_keeps_rfc_9106s_memory_unless_lowered_to_at_least_argon2s_minimum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().password_hash_memory_kib == 65_536
    monkeypatch.setenv("HUBBUB_PASSWORD_HASH_MEMORY_KIB", "32")
    assert load_settings().password_hash_memory_kib == 32
    monkeypatch.setenv("HUBBUB_PASSWORD_HASH_MEMORY_KIB", "31")
    refusal = r"HUBBUB_PASSWORD_HASH_MEMORY_KIB: .*at least 8 KiB per lane, 32 KiB"
    with pytest.raises(SettingsError, match=refusal):
        load_settings()
