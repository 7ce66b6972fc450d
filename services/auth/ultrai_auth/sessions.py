"""Sessions: issuing tokens at login, rotating refresh tokens with reuse detection, ending sessions.

A session is a family of refresh tokens with an absolute lifetime; access tokens carry its id (sid).
A refresh token is spent atomically on use, and a spent token presented again ends its whole session
(RFC 9700 §4.14.2), except within REFRESH_REUSE_INTERVAL_SECONDS of its spending, when it gets the
successor it was already exchanged for (successors.py): concurrent refreshes are not theft.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import uuid
from dataclasses import dataclass

from shared.errors import ProblemError
from shared.tokens import Principal, TokenVerifier, unauthorized
from ultrai_auth.keys import Signer
from ultrai_auth.models import User
from ultrai_auth.repository import AuthRepository, RefreshTokenState
from ultrai_auth.revocation import Revoker
from ultrai_auth.settings import AuthSettings
from ultrai_auth.successors import Grant, Successors

log = logging.getLogger("ultrai_auth")

INVALID_REFRESH = "The refresh token is not valid."


def token_hash(token: str) -> str:
    """How a refresh token is stored: 256 random bits need no slow hash."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(eq=False)
class SessionService:
    repository: AuthRepository
    signer: Signer
    revoker: Revoker
    verifier: TokenVerifier
    settings: AuthSettings
    successors: Successors

    async def issue(self, user_id: str) -> Grant:
        """A new session (refresh-token family) with its first refresh token and an access token."""
        now = time.time()
        session_id = str(uuid.uuid4())
        refresh = new_refresh_token()
        expires_at = now + self.settings.refresh_token_ttl_seconds
        await self.repository.create_session(session_id, user_id, now, expires_at, token_hash(refresh))
        await self.repository.commit()
        return self._grant(user_id, session_id, refresh, expires_at, now)

    async def rotate(self, refresh_token: str) -> Grant:
        """Spend ``refresh_token`` for a new pair in the same session; a spent one ends the session,
        unless it was spent within the reuse interval: then it gets the same successor."""
        now = time.time()
        digest = token_hash(refresh_token)
        spent_now = await self.repository.spend_refresh_token(digest, now)
        state = await self.repository.refresh_token_state(digest)
        if state is None:
            await self.repository.rollback()
            raise unauthorized(INVALID_REFRESH)
        if not spent_now:
            time_left = self._reuse_time_left(state, now)
            if time_left is not None:
                # Nothing is written while waiting: the transaction must not hold the token's row.
                await self.repository.rollback()
                successor = await self.successors.wait_for(refresh_token, digest, time_left)
                if successor is not None and successor.session_id == state.session_id:
                    log.info("refresh token presented again within the reuse interval: session %s", state.session_id)
                    return successor
            # A spent token came back: it was stolen or replayed. End the whole family.
            await self.repository.revoke_session(state.session_id, now)
            await self.repository.commit()
            await self.revoker.revoke("sid", state.session_id)
            log.warning("refresh token reuse: session %s revoked", state.session_id)
            raise unauthorized(INVALID_REFRESH)
        if state.session_revoked_at is not None or state.session_expires_at <= now:
            await self.repository.commit()
            raise unauthorized(INVALID_REFRESH)
        refresh = new_refresh_token()
        await self.repository.add_refresh_token(token_hash(refresh), state.session_id, now)
        await self.repository.commit()
        grant = self._grant(state.user_id, state.session_id, refresh, state.session_expires_at, now)
        # Only once committed: a successor handed to a concurrent request must exist.
        await self.successors.remember(refresh_token, digest, grant)
        return grant

    def _reuse_time_left(self, state: RefreshTokenState, now: float) -> float | None:
        """How much of the reuse interval a spent token has left, or None when it may not get its
        successor: spent the interval ago or longer, or in a session revoked or expired."""
        if (
            not self.successors.enabled
            or state.used_at is None
            or state.session_revoked_at is not None
            or state.session_expires_at <= now
        ):
            return None
        left = state.used_at + self.successors.interval - now
        return left if left > 0 else None

    async def end(self, refresh_token: str | None, access_token: str | None) -> None:
        """Logout: end the session of ``refresh_token`` and revoke ``access_token``. Never fails, so
        the answer is the same whether or not either token was known (or given)."""
        now = time.time()
        session_id = None
        if refresh_token is not None:
            session_id = await self.repository.session_of_refresh_token(token_hash(refresh_token))
        if session_id is not None:
            await self.repository.revoke_session(session_id, now)
            await self.repository.commit()
            await self.revoker.revoke("sid", session_id)
        if access_token:
            try:
                claims = await self.verifier.verify_signature(access_token, "access")
                await self.revoker.revoke("jti", claims["jti"])
            except ProblemError:
                pass  # logout never fails on a bad access token

    async def end_all(self, user_id: str, *, commit: bool = True) -> None:
        """End every session of a user, in the database and for every verifier."""
        session_ids = await self.repository.revoke_user_sessions(user_id, time.time())
        if commit:
            await self.repository.commit()
        await self.revoker.revoke("sid", *session_ids)

    async def user_of(self, principal: Principal) -> User:
        """The user of a verified access token whose session and account still exist, or a 401."""
        if principal.service is not None:
            raise unauthorized("A user access token is required.")
        found = await self.repository.user_with_session(principal.claims["sub"], principal.claims["sid"])
        if found is None or found[1] is not None:
            raise unauthorized("The session has ended.")
        return found[0]

    def _grant(self, user_id: str, session_id: str, refresh: str, expires_at: float, now: float) -> Grant:
        access, _ = self.signer.access_token(user_id, session_id, now)
        return Grant(
            user_id=user_id,
            session_id=session_id,
            access_token=access,
            refresh_token=refresh,
            refresh_expires_at=expires_at,
            expires_in=self.settings.access_token_ttl_seconds,
        )
