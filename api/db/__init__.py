"""The account database: models and the ``accounts`` branch of migrations."""

from pathlib import Path

from api.db.models import Base

__all__ = ["MIGRATIONS", "Base"]

MIGRATIONS = Path(__file__).with_name("migrations")
