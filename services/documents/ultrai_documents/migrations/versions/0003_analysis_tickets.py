"""Single-use tickets to an analysis' event stream (analysis_tickets), for EventSource clients.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "analysis_tickets",
        sa.Column("ticket_hash", sa.String(length=64), nullable=False),
        sa.Column("analysis_id", sa.String(length=32), nullable=False),
        sa.Column("owner_id", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["analysis_id"], ["analyses.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("ticket_hash"),
    )
    with op.batch_alter_table("analysis_tickets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_analysis_tickets_analysis_id"), ["analysis_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_analysis_tickets_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("analysis_tickets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_analysis_tickets_expires_at"))
        batch_op.drop_index(batch_op.f("ix_analysis_tickets_analysis_id"))
    op.drop_table("analysis_tickets")
