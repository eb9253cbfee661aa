"""The cluster's settings: where NATS is, and the fixed shard counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.connection import ClusterConfigError, parse_servers
from config import load_settings
from hubbub.errors import SettingsError
from hubbub.shards import ShardMap


def test_one_node_needs_no_nats(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.nats_url is None
    assert ShardMap(settings.conversation_shards, settings.presence_shards) == ShardMap()


def test_several_servers_are_one_comma_separated_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBBUB_NATS_URL", "nats://n1:4222, nats://n2:4222")
    monkeypatch.setenv("HUBBUB_DATABASE_URL", "postgresql+asyncpg://hubbub@db/hubbub")  # a cluster's
    monkeypatch.setenv("HUBBUB_CONVERSATION_SHARDS", "1024")
    settings = load_settings()
    assert settings.nats_url is not None
    assert parse_servers(settings.nats_url) == ("nats://n1:4222", "nats://n2:4222")
    assert settings.conversation_shards == 1024


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HUBBUB_NATS_URL", "http://n1:4222"),
        ("HUBBUB_NATS_URL", "nats://n1:4222,"),
        ("HUBBUB_CONVERSATION_SHARDS", "0"),
        ("HUBBUB_PRESENCE_SHARDS", "70000"),
    ],
)
def test_a_bad_cluster_setting_names_itself(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_an_empty_server_list_is_refused() -> None:
    with pytest.raises(ClusterConfigError, match="no NATS server"):
        parse_servers(" , ")
