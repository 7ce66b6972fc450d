"""Tables owned by the documents service (its own schema on PostgreSQL).

The original bytes and the extracted text are kept in the database in parts (``BLOB_PART_BYTES``,
``TEXT_PART_CHARS``), so storing and serving a document holds one part in memory at a time.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

BLOB_PART_BYTES = 1024 * 1024
TEXT_PART_CHARS = 1024 * 1024


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """A new document or analysis id: 32 hex characters."""
    return secrets.token_hex(16)


class DocumentsBase(DeclarativeBase):
    """This service's own registry and metadata: its tables only, whatever else is imported."""


class Document(DocumentsBase):
    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("owner_id", "sha256", name="uq_documents_owner_sha256"),
        Index("ix_documents_owner_created", "owner_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(64), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    media_type: Mapped[str] = mapped_column(String(128), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    page_count: Mapped[int | None] = mapped_column(Integer)
    encoding: Mapped[str | None] = mapped_column(String(32))
    char_count: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    token_count: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    chunk_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class DocumentPart:
    """A part of a document, one row of a table of parts: the document's id and the part's place in
    order (``seq``) are its primary key, and the parts go with the document."""

    # First in each table, as its migration made it (a mixin's columns otherwise come last).
    document_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True, sort_order=-1
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, sort_order=-1)


class DocumentBlob(DocumentPart, DocumentsBase):
    """The original bytes in parts of ``BLOB_PART_BYTES`` bytes, in order."""

    __tablename__ = "document_blobs"

    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class DocumentText(DocumentPart, DocumentsBase):
    """The extracted text in parts of ``TEXT_PART_CHARS`` characters, in order."""

    __tablename__ = "document_text_parts"

    text: Mapped[str] = mapped_column(Text, nullable=False)


class Chunk(DocumentPart, DocumentsBase):
    """The text in the chunks an analysis reads, in order, each with its place in the text."""

    __tablename__ = "document_chunks"

    start_char: Mapped[int] = mapped_column(BigInteger, nullable=False)
    end_char: Mapped[int] = mapped_column(BigInteger, nullable=False)
    token_count: Mapped[int] = mapped_column(Integer, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)


class Analysis(DocumentsBase):
    __tablename__ = "analyses"
    __table_args__ = (
        Index("ix_analyses_document_params", "document_id", "params_hash", "created_at"),
        Index("ix_analyses_owner", "owner_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    document_id: Mapped[str] = mapped_column(String(32), ForeignKey("documents.id", ondelete="CASCADE"), nullable=False)
    owner_id: Mapped[str] = mapped_column(String(64), nullable=False)
    # The API key the analysis was started with (its llm calls are counted and limited as the key's).
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    params_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued")
    stage: Mapped[str | None] = mapped_column(String(64))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The claim that owns the analysis (each claim adds one; the work's writes are conditional on it).
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # When the in-process runner running it was last alive (the queue has heartbeats of its own).
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Each model's full answer as it arrives: {"models": {name: result}}; a delivery that takes
    # over asks only the models not in it.
    partial: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class AnalysisEvent(DocumentsBase):
    """Progress, stage by stage, in the database: any instance can stream it to a client."""

    __tablename__ = "analysis_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    analysis_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("analyses.id", ondelete="CASCADE"), nullable=False, index=True
    )
    event: Mapped[str] = mapped_column(String(32), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class AnalysisTicket(DocumentsBase):
    """A short-lived, single-use ticket to one analysis' event stream, for a client that cannot send
    an Authorization header (a browser's EventSource). Only the ticket's SHA-256 is stored.

    In the database rather than in Redis: every instance shares it, and the conditional DELETE that
    spends a ticket is atomic on SQLite and PostgreSQL alike, so a ticket is single use across
    instances with or without Redis (the key-value store falls back to process memory when Redis is
    down, where single use would hold per process only)."""

    __tablename__ = "analysis_tickets"

    ticket_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    analysis_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("analyses.id", ondelete="CASCADE"), nullable=False, index=True
    )
    owner_id: Mapped[str] = mapped_column(String(64), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)
