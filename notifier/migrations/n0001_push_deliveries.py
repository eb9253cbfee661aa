"""Push deliveries: which token was pushed for which message (at most once, across restarts).

Revision ID: n0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "n0001"
down_revision = None
branch_labels = ("deliveries",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "push_deliveries",
        sa.Column("message_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("token_id", sa.String(255), primary_key=True),
        sa.Column("claimed_at_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_push_deliveries_claimed_at_ms", "push_deliveries", ["claimed_at_ms"])


def downgrade() -> None:
    op.drop_index("ix_push_deliveries_claimed_at_ms", "push_deliveries")
    op.drop_table("push_deliveries")
