"""History in Apache Cassandra: the store, its schema migrations and the driver glue.

``connect`` opens the process's one cluster connection and returns the store; ``migrate``
brings a keyspace to the current schema (run it once before, as the launcher does).
"""

from persister.cassandra_store.driver import consistency_level, contact_point
from persister.cassandra_store.paging import PagePlan, bucket_ranges, plan_page
from persister.cassandra_store.schema import BUCKET_SIZE, DEFAULT_REPLICATION, MIGRATIONS, migrate
from persister.cassandra_store.store import CassandraMessageStore, connect

__all__ = [
    "BUCKET_SIZE",
    "DEFAULT_REPLICATION",
    "MIGRATIONS",
    "CassandraMessageStore",
    "PagePlan",
    "bucket_ranges",
    "connect",
    "consistency_level",
    "contact_point",
    "migrate",
    "plan_page",
]
