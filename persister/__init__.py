"""The persister: commits accepted messages to the message store, one writer per conversation."""

from pathlib import Path

from persister.cassandra_store import CassandraMessageStore
from persister.local_log import LocalAcceptedLog
from persister.persister import CommittedHandler, Persister
from persister.sql_store import SqlMessageStore

__all__ = [
    "MIGRATIONS",
    "CassandraMessageStore",
    "CommittedHandler",
    "LocalAcceptedLog",
    "Persister",
    "SqlMessageStore",
]

MIGRATIONS = Path(__file__).with_name("migrations")
