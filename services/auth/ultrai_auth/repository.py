"""Every query of the auth service: users, sessions and their refresh tokens, signing keys.

One ``AuthRepository`` wraps the request's database session; the services above it decide what to
read and write, and when to commit. Nothing else in the service touches SQL.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

from sqlalchemy import CursorResult, Table, and_, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from shared.db import Repository
from ultrai_auth.models import AccountErasure, RefreshToken, Session, SigningKey, User

# A login's writes as plain INSERTs, built once (their values are parameters): the ORM's unit of
# work, and building each statement anew, were most of a login's CPU outside the hash.
INSERT_SESSION = insert(cast("Table", Session.__table__))
INSERT_REFRESH_TOKEN = insert(cast("Table", RefreshToken.__table__))
SELECT_LOGIN_ACCOUNT = select(User.id, User.password_hash).where(User.email == bindparam("email"))


class DuplicateEmail(Exception):
    """An account with this email already exists."""


class RefreshTokenState(NamedTuple):
    """A refresh token's session, as the rotation needs it."""

    session_id: str
    user_id: str
    session_revoked_at: float | None
    session_expires_at: float
    used_at: float | None


class LoginAccount(NamedTuple):
    """What a login reads of an account."""

    id: str
    password_hash: str


class AuthRepository(Repository):
    # ---- users ------------------------------------------------------------------------------
    async def create_user(self, user: User) -> None:
        """Store a new account (committed), or raise DuplicateEmail."""
        self.session.add(user)
        try:
            await self.session.commit()
        except IntegrityError:
            await self.session.rollback()
            raise DuplicateEmail from None

    async def login_account(self, email: str) -> LoginAccount | None:
        """The id and password hash of an account: two columns, not an ORM object (a login needs no more)."""
        row = (await self.session.execute(SELECT_LOGIN_ACCOUNT, {"email": email})).first()
        return None if row is None else LoginAccount(*row)

    async def set_password_hash(self, user_id: str, password_hash: str, changed_at: float | None = None) -> None:
        """Replace an account's stored hash (not committed); with ``changed_at``, a new password."""
        values: dict[str, Any] = {"password_hash": password_hash}
        if changed_at is not None:
            values["password_changed_at"] = changed_at
        await self.session.execute(update(User).where(User.id == user_id).values(**values))

    async def user_with_session(self, user_id: str, session_id: str) -> tuple[User, float | None] | None:
        """The user and the revocation time of one of their sessions, or None if either is gone."""
        row = (
            await self.session.execute(
                select(User, Session.revoked_at)
                .join(Session, Session.user_id == User.id)
                .where(User.id == user_id, Session.id == session_id)
            )
        ).first()
        return None if row is None else (row[0], row[1])

    async def delete_user(self, user_id: str) -> None:
        """Delete an account with its sessions and refresh tokens (not committed)."""
        user_sessions = select(Session.id).where(Session.user_id == user_id)
        await self.session.execute(delete(RefreshToken).where(RefreshToken.session_id.in_(user_sessions)))
        await self.session.execute(delete(Session).where(Session.user_id == user_id))
        await self.session.execute(delete(User).where(User.id == user_id))

    # ---- erasures: what the other services still hold of deleted accounts ----------------------
    async def add_erasures(self, user_id: str, services: list[str], deleted_at: float) -> None:
        """One erasure per service for a deleted account, due at once (not committed)."""
        if services:
            rows = [
                {"user_id": user_id, "service": s, "deleted_at": deleted_at, "due_at": deleted_at} for s in services
            ]
            await self.session.execute(insert(AccountErasure), rows)

    async def pending_erasures(self, service: str, limit: int, now: float) -> list[str]:
        """The deleted accounts ``service`` has to erase now, the longest due first."""
        query = (
            select(AccountErasure.user_id)
            .where(AccountErasure.service == service, AccountErasure.due_at <= now)
            .order_by(AccountErasure.due_at, AccountErasure.user_id)
            .limit(limit)
        )
        return list((await self.session.scalars(query)).all())

    async def erasures_done(self, service: str, user_ids: list[str], now: float, repeat_seconds: float) -> None:
        """``service`` has erased these accounts (not committed): a deletion younger than
        ``repeat_seconds`` is due again when it reaches that age (the second pass), an older one is
        forgotten. Accounts not due (reported twice at once) and unknown ids change nothing."""
        reported = and_(
            AccountErasure.service == service, AccountErasure.user_id.in_(user_ids), AccountErasure.due_at <= now
        )
        again = AccountErasure.deleted_at + repeat_seconds
        await self.session.execute(update(AccountErasure).where(reported, again > now).values(due_at=again))
        await self.session.execute(delete(AccountErasure).where(reported, again <= now))

    # ---- sessions and refresh tokens --------------------------------------------------------
    async def create_session(
        self, session_id: str, user_id: str, created_at: float, expires_at: float, token_hash: str
    ) -> None:
        """A new session with its first refresh token (not committed)."""
        values = {"id": session_id, "user_id": user_id, "created_at": created_at, "expires_at": expires_at}
        await self.session.execute(INSERT_SESSION, values)
        await self.add_refresh_token(token_hash, session_id, created_at)

    async def add_refresh_token(self, token_hash: str, session_id: str, created_at: float) -> None:
        values = {"token_hash": token_hash, "session_id": session_id, "created_at": created_at}
        await self.session.execute(INSERT_REFRESH_TOKEN, values)

    async def spend_refresh_token(self, token_hash: str, now: float) -> bool:
        """Mark an unused refresh token used. Only one caller can flip ``used_at`` from NULL: True for
        that caller, False for every other (and for an unknown token)."""
        result = await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.token_hash == token_hash, RefreshToken.used_at.is_(None))
            .values(used_at=now)
        )
        return cast("CursorResult[Any]", result).rowcount == 1

    async def refresh_token_state(self, token_hash: str) -> RefreshTokenState | None:
        row = (
            await self.session.execute(
                select(
                    RefreshToken.session_id,
                    Session.user_id,
                    Session.revoked_at,
                    Session.expires_at,
                    RefreshToken.used_at,
                )
                .join(Session, Session.id == RefreshToken.session_id)
                .where(RefreshToken.token_hash == token_hash)
            )
        ).first()
        return None if row is None else RefreshTokenState(*row)

    async def session_of_refresh_token(self, token_hash: str) -> str | None:
        return (
            await self.session.execute(select(RefreshToken.session_id).where(RefreshToken.token_hash == token_hash))
        ).scalar_one_or_none()

    async def revoke_session(self, session_id: str, now: float) -> None:
        await self.session.execute(
            update(Session).where(Session.id == session_id, Session.revoked_at.is_(None)).values(revoked_at=now)
        )

    async def revoke_user_sessions(self, user_id: str, now: float) -> list[str]:
        """Revoke every live session of a user (not committed); their ids."""
        live = (Session.user_id == user_id, Session.revoked_at.is_(None))
        session_ids = list((await self.session.execute(select(Session.id).where(*live))).scalars())
        await self.session.execute(update(Session).where(*live).values(revoked_at=now))
        return session_ids

    # ---- signing keys -----------------------------------------------------------------------
    async def signing_key(self, kid: str) -> SigningKey | None:
        return await self.session.get(SigningKey, kid)

    async def add_signing_key(self, kid: str, jwk: str, first_used_at: float) -> None:
        """Record a signing key unless it is recorded already: workers and instances starting at
        once with the same key each record it, and none fails on the other's row."""
        values = {"kid": kid, "jwk": jwk, "first_used_at": first_used_at}
        if self.session.get_bind().dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            await self.session.execute(pg_insert(SigningKey).values(**values).on_conflict_do_nothing())
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            await self.session.execute(sqlite_insert(SigningKey).values(**values).on_conflict_do_nothing())

    async def retire_signing_keys_except(self, kid: str, now: float) -> None:
        await self.session.execute(
            update(SigningKey).where(SigningKey.kid != kid, SigningKey.retired_at.is_(None)).values(retired_at=now)
        )

    async def signing_keys_retired_after(self, since: float) -> list[SigningKey]:
        return list((await self.session.execute(select(SigningKey).where(SigningKey.retired_at > since))).scalars())
