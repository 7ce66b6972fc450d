"""Tables owned by the auth service (its own schema on PostgreSQL).

Times are Unix seconds (floats), the same on SQLite and PostgreSQL. Refresh tokens are stored only as
SHA-256 hashes (they are 256-bit random strings, so a fast hash is enough); passwords only as argon2id.
"""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class AuthBase(DeclarativeBase):
    """This service's own registry and metadata: its tables only, whatever else is imported."""


class User(AuthBase):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # Normalised (trimmed, lower-cased) before it is stored, so the unique index is case-insensitive.
    email: Mapped[str] = mapped_column(String(320), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    password_changed_at: Mapped[float] = mapped_column(Float, nullable=False)


class Session(AuthBase):
    """One login: the family of refresh tokens it rotates through; access tokens carry its id (sid)."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    # Absolute lifetime: rotation never extends it.
    expires_at: Mapped[float] = mapped_column(Float, nullable=False)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class RefreshToken(AuthBase):
    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(36), ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    # Set once, by a conditional UPDATE: a token is used at most once.
    used_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class SigningKey(AuthBase):
    """Every public key the service has signed with, so a rotated key stays published for a while."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    jwk: Mapped[str] = mapped_column(Text, nullable=False)
    first_used_at: Mapped[float] = mapped_column(Float, nullable=False)
    retired_at: Mapped[float | None] = mapped_column(Float, nullable=True)
