"""The account database: models, engine and migrations (SQLite by default, PostgreSQL in production)."""

from api.db.engine import create_engine, migrate
from api.db.models import Base

__all__ = ["Base", "create_engine", "migrate"]
