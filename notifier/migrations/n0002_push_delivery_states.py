"""Push delivery states: a claim is in flight until it is settled (pushed or given up for good).

Two-phase claims let a redelivered message, after a notifier died mid-batch, skip what was
pushed and take over what the dead notifier had only claimed (``notifier.deliveries``). Rows
written before this revision were one-phase claims, all as good as settled: they get their
claim time as their settle time.

Revision ID: n0002
Revises: n0001
"""

import sqlalchemy as sa
from alembic import op

revision = "n0002"
down_revision = "n0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("push_deliveries") as batch:
        batch.add_column(sa.Column("settled_at_ms", sa.BigInteger(), nullable=True))
    op.execute("UPDATE push_deliveries SET settled_at_ms = claimed_at_ms")


def downgrade() -> None:
    with op.batch_alter_table("push_deliveries") as batch:
        batch.drop_column("settled_at_ms")
