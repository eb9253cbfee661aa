"""Messages: history of every conversation, dense seq per conversation, one row per cmid.

Revision ID: m0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "m0001"
down_revision = None
branch_labels = ("messages",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("conversation_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False, unique=True),
        sa.Column("sender_id", sa.BigInteger(), nullable=False),
        sa.Column("cmid", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("conversation_id", "sender_id", "cmid", name="uq_messages_cmid"),
    )


def downgrade() -> None:
    op.drop_table("messages")
