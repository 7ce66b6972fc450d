"""An analysis' delivery fence, heartbeat and the answers it has already received.

``attempt`` counts the claims of the analysis: the claim that set it owns the analysis, and every
later write of the work is conditional on it, so a delivery that lost its claim (a worker thought
dead) writes nothing. ``heartbeat_at`` is when the in-process runner that runs it was last alive.
``partial`` keeps each model's answer as it arrives, so a delivery that takes over does not ask a
model again.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("analyses") as batch_op:
        batch_op.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("partial", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("analyses") as batch_op:
        batch_op.drop_column("partial")
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("attempt")
