"""A cluster's settings: the process name, replicas, and combinations a cluster cannot run on."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from config import load_settings
from hubbub.errors import SettingsError

NATS = "nats://127.0.0.1:4222"
POSTGRES = "postgresql+asyncpg://hubbub@db/hubbub"


def test_a_cluster_on_sqlite_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(data_dir=tmp_path, nats_url=NATS)
    message = str(refused.value)
    assert "\n" not in message
    assert message == (
        "invalid setting: a cluster (HUBBUB_NATS_URL) needs PostgreSQL for accounts "
        "(HUBBUB_DATABASE_URL=postgresql+asyncpg://...) and PostgreSQL or Cassandra "
        "(HUBBUB_CASSANDRA_HOSTS) for history: SQLite serves one process only"
    )
    with pytest.raises(SettingsError, match="SQLite serves one process only"):
        load_settings(nats_url=NATS, database_url="sqlite+aiosqlite:///shared.db", cassandra_hosts="c1")


def test_a_cluster_on_postgresql_or_with_cassandra_history_is_accepted() -> None:
    assert load_settings(nats_url=NATS, database_url=POSTGRES).clustered
    with_cassandra = load_settings(nats_url=NATS, database_url=POSTGRES, cassandra_hosts="c1,c2")
    assert with_cassandra.nats_replicas == 3
    assert not load_settings().clustered  # one node: SQLite is fine


def test_the_process_name_defaults_to_host_and_pid() -> None:
    name = load_settings().resolved_node_name
    assert name.endswith(f"-{os.getpid()}")
    assert re.fullmatch(r"[-_A-Za-z0-9]+", name)
    assert name.startswith(re.sub(r"[^-_A-Za-z0-9]", "-", socket.gethostname())[:40])
    assert load_settings(node_name="broker-1").resolved_node_name == "broker-1"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HUBBUB_NODE_NAME", "broker.1"),
        ("HUBBUB_NODE_NAME", "a b"),
        ("HUBBUB_NATS_REPLICAS", "0"),
        ("HUBBUB_NATS_REPLICAS", "7"),
        ("HUBBUB_LEASE_TTL_S", "0.5"),
        ("HUBBUB_REGISTRY_TTL_S", "0"),
    ],
)
def test_a_bad_setting_names_itself(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()
