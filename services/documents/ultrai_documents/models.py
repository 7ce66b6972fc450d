"""Tables owned by the documents service (its own schema on PostgreSQL)."""

from __future__ import annotations

from shared.db import Base


class DocumentsBase(Base):
    __abstract__ = True
