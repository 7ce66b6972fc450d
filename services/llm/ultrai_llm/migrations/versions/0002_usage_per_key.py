"""llm usage per API key: the key a call was made with (none for access tokens)

Revision ID: 0002_usage_per_key
Revises: 0001_llm_usage
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_usage_per_key"
down_revision: str | None = "0001_llm_usage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("llm_usage") as batch:
        batch.add_column(sa.Column("key_id", sa.String(16), nullable=True))
    op.create_index("ix_llm_usage_key_created", "llm_usage", ["key_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_llm_usage_key_created", table_name="llm_usage")
    with op.batch_alter_table("llm_usage") as batch:
        batch.drop_column("key_id")
