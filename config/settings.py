"""The settings object: env ``HUBBUB_*`` over an optional ``hubbub.toml`` over defaults.

Every default works on one laptop (SQLite and a generated secret under ``data_dir``).
Settings are built once by the entry point (``load_settings``) and passed down; nothing
reads the environment at import time.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
import socket
import stat
from pathlib import Path
from typing import Literal

from argon2.profiles import RFC_9106_LOW_MEMORY
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from hubbub.errors import SettingsError
from hubbub.shards import DEFAULT_CONVERSATION_SHARDS, DEFAULT_PRESENCE_SHARDS, MAX_SHARDS

__all__ = ["ENV_PREFIX", "Settings", "load_settings", "resolve_secret"]

logger = logging.getLogger(__name__)

ENV_PREFIX = "HUBBUB_"
CONFIG_FILE_ENV = "HUBBUB_CONFIG_FILE"
_SECRET_FILE = "secret.key"  # noqa: S105 - a file name
_MIN_SECRET_LENGTH = 32
_PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "placeholder", "password", "hubbub"})
# The largest legal JSON encoding of one character: an astral code point escaped as a
# UTF-16 surrogate pair (``\ud83c\udf89``), which is what ``json.dumps`` does by default.
MAX_JSON_BYTES_PER_CHAR = 12
# Room for the cmid, the JSON keys, the topic name and the MQTT headers around the text.
PACKET_OVERHEAD_BYTES = 4096

Port = int
CassandraConsistency = Literal["LOCAL_QUORUM", "QUORUM", "EACH_QUORUM", "LOCAL_ONE", "ONE", "ALL"]
_NODE_NAME = re.compile(r"^[-_A-Za-z0-9]{1,64}$")
_REPO_WEB_DIST = Path(__file__).resolve().parents[1] / "web" / "dist"
# Passwords are hashed with argon2id as RFC 9106's second recommended option (argon2-cffi's
# default profile: 64 MiB, 3 passes, 4 lanes); argon2 itself needs at least 8 KiB per lane.
_PASSWORD_HASH_MEMORY_KIB = RFC_9106_LOW_MEMORY.memory_cost
_MIN_PASSWORD_HASH_MEMORY_KIB = 8 * RFC_9106_LOW_MEMORY.parallelism


class Settings(BaseSettings):
    """Everything configurable, with the embedded defaults of a single-machine install."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    data_dir: Path = Field(Path("hubbub-data"), description="Where SQLite and the generated secret live.")
    bind: str = Field("127.0.0.1", description="Address every listener binds to (0.0.0.0 for all).")
    mqtt_port: Port = Field(1883, ge=0, le=65535, description="MQTT over TCP (0 = any free port).")
    http_port: Port = Field(8000, ge=0, le=65535, description="REST API, docs and MQTT over WebSocket.")
    broker_ws_port: Port = Field(
        8083, ge=0, le=65535, description="MQTT over WebSocket when `hubbub broker` runs on its own."
    )
    web_dir: Path = Field(
        _REPO_WEB_DIST, description="The built web chat served at / (`make web` builds it)."
    )
    http_idle_timeout_s: float = Field(
        15.0, gt=0, le=3600, description="An HTTP connection sending no request for this long is closed."
    )
    http_header_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Time a request has, from its first byte, to send its whole head."
    )
    http_body_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="Longest pause in a request body before the connection is closed."
    )
    http_max_connections_per_address: int = Field(
        128,
        ge=1,
        description="Connections one client address may hold on the HTTP port, WebSockets included "
        "(raise it behind a reverse proxy or a NAT many users share).",
    )
    http_max_connections: int | None = Field(
        None,
        ge=1,
        description="Connections the HTTP port may hold in all; default half the descriptor limit, "
        "so MQTT keeps the other half.",
    )
    public_host: str | None = Field(None, description="Host name clients are told to connect to.")
    database_url: str | None = Field(
        None, description="SQLAlchemy async URL; default sqlite+aiosqlite under data_dir."
    )
    sqlite_busy_timeout_s: float = Field(
        5.0, gt=0, le=300, description="How long a SQLite write waits out another's lock before failing."
    )
    cassandra_hosts: str | None = Field(
        None, description="host[:port],... of a Cassandra cluster for message history (else SQL)."
    )
    cassandra_keyspace: str = Field("hubbub", description="Keyspace of the history tables.")
    cassandra_replication: str = Field(
        "{'class': 'SimpleStrategy', 'replication_factor': 1}",
        description="CQL replication map the keyspace is created with when missing"
        " (e.g. {'class': 'NetworkTopologyStrategy', 'dc1': 3}); empty: operators create it.",
    )
    cassandra_consistency: CassandraConsistency = Field(
        "LOCAL_QUORUM", description="Consistency of history reads and writes (R + W > RF keeps heads exact)."
    )
    cassandra_local_dc: str | None = Field(
        None, description="Data centre whose replicas serve requests (default: the first host's)."
    )
    secret_key: SecretStr | None = Field(
        None, description="JWT signing secret (>= 32 chars); generated under data_dir when unset."
    )
    connect_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Time a new connection has to send CONNECT."
    )
    node_id: int = Field(0, ge=0, le=1023, description="This node's id inside Snowflake message ids.")
    access_token_ttl_s: int = Field(900, ge=30, le=86_400, description="Access token lifetime.")
    refresh_token_ttl_s: int = Field(30 * 86_400, ge=3600, description="Refresh token lifetime.")
    max_message_chars: int = Field(100_000, ge=1, le=1_000_000, description="Longest text message.")
    sends_per_second: float = Field(20.0, gt=0, description="Sustained messages a second per device.")
    send_burst: int = Field(
        100, ge=1, description="Messages a device may send at once before the rate applies."
    )
    presence_grace_s: float = Field(
        10.0, ge=0, le=600, description="Time a user's last device may be gone before it shows offline."
    )
    max_group_members: int = Field(100, ge=2, le=10_000, description="Largest group, creator included.")
    login_free_failures: int = Field(
        5, ge=1, description="Wrong passwords for one username from one address before delays start."
    )
    login_max_delay_s: int = Field(
        900, ge=1, le=86_400, description="Longest wait after repeated wrong passwords (it doubles up to it)."
    )
    trusted_proxies: str = Field(
        "",
        description="Comma-separated addresses or networks of reverse proxies whose X-Forwarded-For is "
        "believed (default: none, the peer's address counts).",
    )
    password_hash_memory_kib: int = Field(
        _PASSWORD_HASH_MEMORY_KIB,
        le=4 * 1024 * 1024,
        description="Memory (KiB) of each argon2id password hash: the cost of a sign-up or login, and of "
        "a guess. Keep the default (RFC 9106's 64 MiB) in production; test suites lower it to the "
        f"minimum ({_MIN_PASSWORD_HASH_MEMORY_KIB}). Stored hashes carry their own cost and keep verifying.",
    )
    login_attempts_per_address_per_minute: int = Field(
        60, ge=1, description="Login attempts per client address (many users may share one NAT)."
    )
    nats_url: str | None = Field(
        None,
        description="nats://host:port,... of the NATS (JetStream) cluster; unset = one node, in-process.",
    )
    conversation_shards: int = Field(
        DEFAULT_CONVERSATION_SHARDS,
        ge=1,
        le=MAX_SHARDS,
        description="Virtual conversation shards (persister leases); fixed for the life of the data.",
    )
    presence_shards: int = Field(
        DEFAULT_PRESENCE_SHARDS,
        ge=1,
        le=MAX_SHARDS,
        description="Virtual user shards, each with one presence writer; fixed for a cluster's life.",
    )
    node_name: str | None = Field(
        None,
        description="This process in a cluster: lease owner, registry key, reply subject "
        "(letters, digits, '-', '_'; default <hostname>-<pid>).",
    )
    nats_replicas: int = Field(
        3,
        ge=1,
        le=5,
        description="Replicas of every cluster stream and KV bucket (1 for a single NATS server).",
    )
    lease_ttl_s: float = Field(
        7.5,
        ge=1,
        le=300,
        description="Shard lease lifetime (persister, notifier, presence): a dead owner's shards move "
        "within 1.33 x this; the same in every process of a cluster.",
    )
    registry_ttl_s: float = Field(
        6.0,
        ge=1,
        le=300,
        description="A process missing from the node registry this long is dead (it heartbeats 3 times "
        "as often); the same in every process of a cluster.",
    )
    resync_users_per_second: float = Field(
        2_000.0,
        gt=0,
        le=1_000_000,
        description="After its NATS connection comes back, a broker node tells this many of its users a "
        "second to catch up (each of their devices then calls GET /v1/sync): its extra load on the API; "
        "and checks this many of its connected devices a second against the account store.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    push_webhook_url: str | None = Field(
        None, description="POST pushes here as JSON when no native provider fits (else they are logged)."
    )
    push_webhook_secret: SecretStr | None = Field(None, description="HMAC-SHA256 key signing webhook pushes.")
    push_coalesce_window_s: float = Field(
        3.0, ge=0, le=60, description="Bursts within this window make one push."
    )
    push_ack_wait_s: float = Field(
        30.0,
        ge=1,
        le=300,
        description="A push batch its notifier left unsettled (it died) goes to the shard's next owner "
        "this long after the notifier last marked it.",
    )
    apns_url: str = Field(
        "https://api.push.apple.com", description="APNs endpoint (the sandbox, or a test server)."
    )
    apns_key_path: Path | None = Field(None, description="APNs token-auth key (.p8); enables APNs.")
    apns_key_id: str | None = Field(None, description="The .p8 key's id.")
    apns_team_id: str | None = Field(None, description="The Apple developer team id.")
    apns_topic: str | None = Field(None, description="The app's bundle id (apns-topic).")
    apns_ca_file: Path | None = Field(None, description="Extra CA to trust for the APNs endpoint (tests).")
    fcm_url: str = Field("https://fcm.googleapis.com", description="FCM HTTP v1 endpoint.")
    fcm_credentials_path: Path | None = Field(None, description="Service-account JSON; enables FCM.")
    webpush_subject: str = Field("mailto:admin@localhost", description="VAPID subject (mailto: or https:).")

    @field_validator("bind")
    @classmethod
    def _bind_is_an_address(cls, value: str) -> str:
        if not value or any(ch.isspace() for ch in value):
            raise ValueError("must be a host name or IP address")
        return value

    @field_validator("password_hash_memory_kib")
    @classmethod
    def _argon2_memory_minimum(cls, value: int) -> int:
        if value < _MIN_PASSWORD_HASH_MEMORY_KIB:
            raise ValueError(
                f"argon2id needs at least 8 KiB per lane, {_MIN_PASSWORD_HASH_MEMORY_KIB} KiB with its "
                f"{RFC_9106_LOW_MEMORY.parallelism} lanes (in production keep the default, "
                f"{_PASSWORD_HASH_MEMORY_KIB})"
            )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip():
                try:
                    ipaddress.ip_network(part.strip(), strict=False)
                except ValueError as exc:
                    raise ValueError(f"{part.strip()!r} is not an address or network") from exc
        return value

    @field_validator("nats_url")
    @classmethod
    def _nats_urls(cls, value: str | None) -> str | None:
        if value is None:
            return None
        urls = [url.strip() for url in value.split(",")]
        if not all(url.startswith(("nats://", "tls://")) and len(url) > len("nats://") for url in urls):
            raise ValueError("must be nats://host:port (or tls://), comma-separated for several servers")
        return ",".join(urls)

    @field_validator("node_name")
    @classmethod
    def _node_name_is_a_token(cls, value: str | None) -> str | None:
        if value is not None and not _NODE_NAME.match(value):
            raise ValueError("must be 1-64 letters, digits, '-' or '_'")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_is_async(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @model_validator(mode="after")
    def _apns_complete(self) -> Settings:
        if self.apns_key_path is not None:
            missing = [
                name for name in ("apns_key_id", "apns_team_id", "apns_topic") if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"APNs needs {', '.join(ENV_PREFIX + name.upper() for name in missing)} too")
        return self

    @model_validator(mode="after")
    def _cluster_needs_shared_databases(self) -> Settings:
        if self.nats_url is not None and self.resolved_database_url.startswith("sqlite"):
            raise ValueError(
                f"a cluster ({ENV_PREFIX}NATS_URL) needs PostgreSQL for accounts ({ENV_PREFIX}DATABASE_URL="
                f"postgresql+asyncpg://...) and PostgreSQL or Cassandra ({ENV_PREFIX}CASSANDRA_HOSTS) for "
                "history: SQLite serves one process only"
            )
        return self

    @property
    def clustered(self) -> bool:
        """Whether this process is one of a cluster (``nats_url`` set) rather than a single node."""
        return self.nats_url is not None

    @property
    def resolved_node_name(self) -> str:
        """``node_name``, or ``<hostname>-<pid>`` with anything but letters, digits, '-', '_' made '-'."""
        if self.node_name is not None:
            return self.node_name
        host = re.sub(r"[^-_A-Za-z0-9]", "-", socket.gethostname())[:40] or "node"
        return f"{host}-{os.getpid()}"

    @property
    def resolved_database_url(self) -> str:
        """The configured database, or SQLite in ``data_dir``."""
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'hubbub.db'}"

    @property
    def advertised_host(self) -> str:
        """Host name put in login responses so devices know where the broker is."""
        if self.public_host:
            return self.public_host
        return "localhost" if self.bind in {"0.0.0.0", "::", "127.0.0.1"} else self.bind  # noqa: S104

    @property
    def trusted_proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """``trusted_proxies`` parsed (validated when the settings were built)."""
        parts = (part.strip() for part in self.trusted_proxies.split(","))
        return [ipaddress.ip_network(part, strict=False) for part in parts if part]

    @property
    def max_packet_bytes(self) -> int:
        """Largest MQTT packet accepted: every legal message fits, nothing much larger does."""
        return self.max_message_chars * MAX_JSON_BYTES_PER_CHAR + PACKET_OVERHEAD_BYTES

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Explicit arguments, then the environment, then ``hubbub.toml`` (or ``$HUBBUB_CONFIG_FILE``)."""
        del dotenv_settings, file_secret_settings
        toml_file = Path(os.environ.get(CONFIG_FILE_ENV, "hubbub.toml"))
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file)


def load_settings(**overrides: object) -> Settings:
    """Build the settings once, turning a validation failure into a message naming the setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(_problem(error["loc"], error["msg"]) for error in exc.errors())
        raise SettingsError(f"invalid setting: {problems}") from exc


def _problem(location: tuple[int | str, ...], message: str) -> str:
    """One setting's problem, named; a combination's (no location) is its message alone."""
    if not location:
        return message.removeprefix("Value error, ")
    return f"{ENV_PREFIX}{'_'.join(str(part) for part in location).upper()}: {message}"


def resolve_secret(settings: Settings) -> str:
    """The signing secret: the configured one (placeholders refused) or one generated once.

    A generated secret is written to ``data_dir/secret.key`` with mode 0600 so that every
    process sharing the data directory (``hubbub broker`` and ``hubbub api``) agrees on it.
    """
    if settings.secret_key is not None:
        secret = settings.secret_key.get_secret_value()
        if secret.strip().lower() in _PLACEHOLDER_SECRETS or len(secret) < _MIN_SECRET_LENGTH:
            raise SettingsError(
                f"invalid setting: {ENV_PREFIX}SECRET_KEY is a placeholder or shorter than "
                f"{_MIN_SECRET_LENGTH} characters"
            )
        return secret
    path = settings.data_dir / _SECRET_FILE
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise SettingsError(f"{path} is readable by others (mode {mode:o}); chmod 600 it") from None
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_urlsafe(48))
    logger.info("generated a new signing secret in %s", path)
    return path.read_text(encoding="ascii").strip()
