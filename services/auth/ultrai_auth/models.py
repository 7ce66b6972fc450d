"""Tables owned by the auth service (its own schema on PostgreSQL)."""

from __future__ import annotations

from shared.db import Base


class AuthBase(Base):
    __abstract__ = True
