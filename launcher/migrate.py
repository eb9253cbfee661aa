"""Start-up migrations: every component's Alembic branch, applied to one database."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import api.db
import notifier
import persister

__all__ = ["migrate"]

logger = logging.getLogger(__name__)

_ENVIRONMENT = Path(__file__).with_name("migrations")
_BRANCHES = (api.db.MIGRATIONS, persister.MIGRATIONS, notifier.MIGRATIONS)
_POSTGRES_MIGRATION_LOCK = 7461626275  # any constant: serialises concurrent start-ups


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(_ENVIRONMENT))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", ":".join(str(path) for path in _BRANCHES))
    config.attributes["connection"] = connection
    command.upgrade(config, "heads")


async def migrate(engine: AsyncEngine) -> None:
    """Bring every branch to its newest revision (idempotent; run on every start)."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # `hubbub api` and `hubbub broker` starting together must not both create tables.
            await connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_POSTGRES_MIGRATION_LOCK})")
        await connection.run_sync(_upgrade)
    logger.info("database schema is up to date")
