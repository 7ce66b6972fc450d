"""Tables owned by the auth service (its own schema on PostgreSQL).

Times are Unix seconds (floats), the same on SQLite and PostgreSQL. Refresh tokens are stored only as
SHA-256 hashes (they are 256-bit random strings, so a fast hash is enough); passwords only as argon2id.
"""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Integer, String, Text
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


class ApiKey(AuthBase):
    """A personal API key: stored only as the SHA-256 of the whole key (shared.apikeys)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    # Space-separated scopes.
    scopes: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    spent_usd: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)


class AccountErasure(AuthBase):
    """A deleted account whose data one of the other services still holds: written in the deletion's
    transaction, one row per service (ERASURE_SERVICES), listed to that service from ``due_at``
    (``/api/v1/auth/erasures``). Its first report makes it due again ERASURE_REPEAT_SECONDS after
    the deletion (a second pass, for what work under way wrote after the first); the report after
    that removes it. No foreign key: the account is gone."""

    __tablename__ = "account_erasures"

    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    service: Mapped[str] = mapped_column(String(32), primary_key=True)
    deleted_at: Mapped[float] = mapped_column(Float, nullable=False)
    due_at: Mapped[float] = mapped_column(Float, nullable=False, index=True)
