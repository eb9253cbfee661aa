"""A real PostgreSQL server in a temp directory, on a free port, for the life of a test session.

Started by ``launcher/local_servers.py``, the same code ``make cluster`` uses.
"""

from __future__ import annotations

from launcher.local_servers import PostgresServer, start_postgres

__all__ = ["PostgresServer", "start_postgres"]
