"""Tables for a component's tests, made the one way production makes them: by its migrations.

A component's tests migrate only that component's branch (``persister.MIGRATIONS``,
``notifier.MIGRATIONS``, ...), so they need neither the launcher nor another component.
The Alembic environment is the launcher's (``launcher/migrations``), used as a directory of
scripts: nothing of ``launcher`` is imported.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["migrate"]

_ENVIRONMENT = Path(__file__).resolve().parents[2] / "launcher" / "migrations"


async def migrate(engine: AsyncEngine, *branches: Path) -> None:
    """Bring ``branches`` (each a component's ``MIGRATIONS`` directory) to their newest revision."""

    def upgrade(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(_ENVIRONMENT))
        config.set_main_option("path_separator", "os")
        config.set_main_option("version_locations", ":".join(str(path) for path in branches))
        config.attributes["connection"] = connection
        command.upgrade(config, "heads")

    async with engine.begin() as connection:
        await connection.run_sync(upgrade)
