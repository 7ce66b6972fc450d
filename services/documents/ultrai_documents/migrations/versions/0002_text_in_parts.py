"""The extracted text in parts (document_text_parts), so no request holds a whole text in memory.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "document_text_parts",
        sa.Column("document_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["document_id"], ["documents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("document_id", "seq"),
    )
    op.execute("INSERT INTO document_text_parts (document_id, seq, text) SELECT document_id, 0, text FROM document_texts")
    op.drop_table("document_texts")


def downgrade() -> None:
    op.create_table(
        "document_texts",
        sa.Column("document_id", sa.String(length=32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["document_id"], ["documents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("document_id"),
    )
    # Parts are joined back in order (string_agg on PostgreSQL, group_concat on SQLite).
    bind = op.get_bind()
    joined = "string_agg(text, '' ORDER BY seq)" if bind.dialect.name == "postgresql" else "group_concat(text, '')"
    op.execute(
        f"INSERT INTO document_texts (document_id, text) SELECT document_id, {joined} "  # noqa: S608
        "FROM (SELECT * FROM document_text_parts ORDER BY document_id, seq) AS parts GROUP BY document_id"
    )
    op.drop_table("document_text_parts")
