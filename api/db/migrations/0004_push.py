"""Push registrations per device, and muting a conversation.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("members") as members:
        members.add_column(sa.Column("muted", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "push_registrations",
        sa.Column(
            "device_id", sa.String(24), sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("user_id", sa.BigInteger(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("token", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("rejected_at", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_push_registrations_user_id", "push_registrations", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_push_registrations_user_id", "push_registrations")
    op.drop_table("push_registrations")
    with op.batch_alter_table("members") as members:
        members.drop_column("muted")
