"""A real PostgreSQL server in a temp directory, on a free port, for the life of a test session.

Started by ``launcher/local_servers.py``, the same code ``make cluster`` uses. The benchmark
(``bench.postgres``) starts its server here too, with PostgreSQL's own durable defaults instead
of the tests' ``fsync=off``.
"""

from __future__ import annotations

from collections.abc import Mapping

from launcher import local_servers
from launcher.local_servers import PostgresServer

__all__ = ["TEST_SETTINGS", "PostgresServer", "start_postgres"]

TEST_SETTINGS: Mapping[str, str] = {"fsync": "off"}  # tests throw the server away: durability costs time


def start_postgres(settings: Mapping[str, str] = TEST_SETTINGS) -> PostgresServer:
    """Run initdb + pg_ctl start in a fresh temp dir, on loopback only, with ``settings`` (each a ``-c``)."""
    return local_servers.start_postgres(settings)
