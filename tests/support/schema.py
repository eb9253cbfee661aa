"""Tables for a component's tests, made the one way production makes them: by its migrations.

A component's tests migrate only that component's branch (``persister.MIGRATIONS``,
``notifier.MIGRATIONS``, ...), so they need neither the launcher nor another component.
The Alembic environment is the launcher's (``launcher/migrations``), used as a directory of
scripts: nothing of ``launcher`` is imported. ``differences`` compares a database with the
SQLAlchemy ``Table`` objects a component queries through, so those cannot drift from the
migrations unnoticed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["differences", "migrate"]

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


async def differences(engine: AsyncEngine, metadata: MetaData) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match ``metadata`` (its tables only).

    Columns, types, nullability, primary keys, unique constraints and indexes are compared;
    an empty list means the database has exactly the tables ``metadata`` describes.
    """

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "include_name": lambda name, kind, _parent: kind != "table" or name in metadata.tables,
            },
        )
        return list(compare_metadata(context, metadata))

    async with engine.connect() as connection:
        return await connection.run_sync(compare)
