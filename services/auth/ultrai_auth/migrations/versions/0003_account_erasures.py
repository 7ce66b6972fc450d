"""Deleted accounts whose data another service has still to erase.

Revision ID: 0003_account_erasures
Revises: 0002_api_keys
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_account_erasures"
down_revision = "0002_api_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account_erasures",
        sa.Column("user_id", sa.String(36), primary_key=True),
        sa.Column("service", sa.String(32), primary_key=True),
        sa.Column("deleted_at", sa.Float(), nullable=False),
        sa.Column("due_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_account_erasures_due_at", "account_erasures", ["due_at"])


def downgrade() -> None:
    op.drop_index("ix_account_erasures_due_at", table_name="account_erasures")
    op.drop_table("account_erasures")
