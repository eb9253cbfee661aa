"""Friends, friend requests, and each user's last_active_at (presence survives restarts).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as users:
        users.add_column(sa.Column("last_active_at", sa.BigInteger(), nullable=True))
    op.create_table(
        "friends",
        sa.Column(
            "user_id", sa.BigInteger(), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "friend_id", sa.BigInteger(), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "friend_requests",
        sa.Column(
            "from_id", sa.BigInteger(), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("to_id", sa.BigInteger(), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_friend_requests_to_id", "friend_requests", ["to_id"])


def downgrade() -> None:
    op.drop_index("ix_friend_requests_to_id", "friend_requests")
    op.drop_table("friend_requests")
    op.drop_table("friends")
    with op.batch_alter_table("users") as users:
        users.drop_column("last_active_at")
