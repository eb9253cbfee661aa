"""Shard fences: each conversation shard's newest owner epoch, checked in a cluster's commits.

A persister of a cluster commits a shard's batches with its lease's epoch; PostgreSQL checks
it in the commit's own transaction against this row (``persister.sql_fencing``). The table
exists on SQLite too (one schema), where nothing writes it: SQLite serves a single node.

Revision ID: m0002
Revises: m0001
"""

import sqlalchemy as sa
from alembic import op

revision = "m0002"
down_revision = "m0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shard_fences",
        sa.Column("shard", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("shard_fences")
