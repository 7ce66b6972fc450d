"""Tables owned by the llm service (its own schema on PostgreSQL)."""

from __future__ import annotations

from shared.db import Base


class LlmBase(Base):
    __abstract__ = True
