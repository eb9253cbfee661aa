"""Rotated-out refresh tokens, kept to recognise their reuse (OAuth 2.0 Security BCP).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retired_refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "device_id", sa.String(24), sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_retired_refresh_tokens_device_id", "retired_refresh_tokens", ["device_id"])


def downgrade() -> None:
    op.drop_index("ix_retired_refresh_tokens_device_id", "retired_refresh_tokens")
    op.drop_table("retired_refresh_tokens")
