"""Accounts: registration, login, password change and deletion."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from shared.errors import ProblemError
from shared.tokens import unauthorized
from ultrai_auth.models import User
from ultrai_auth.passwords import PasswordService, policy_problems
from ultrai_auth.repository import AuthRepository, DuplicateEmail
from ultrai_auth.revocation import Revoker
from ultrai_auth.sessions import SessionService
from ultrai_auth.settings import AuthSettings
from ultrai_auth.successors import Grant
from ultrai_auth.throttle import LoginThrottle

log = logging.getLogger("ultrai_auth")

INVALID_LOGIN = "Invalid email or password."


def normalize_email(email: str) -> str:
    return email.strip().lower()


def refused_password(field: str, problem: str) -> ProblemError:
    return ProblemError(422, f"Invalid request: {field}: {problem}", title="Validation failed")


@dataclass(eq=False)
class AccountService:
    repository: AuthRepository
    passwords: PasswordService
    sessions: SessionService
    throttle: LoginThrottle
    revoker: Revoker
    settings: AuthSettings

    async def register(self, email: str, password: str, address: str) -> User:
        """A new account, from a client at ``address``: 429, 422 (password policy) or 409 (taken)."""
        await self.throttle.check_registration(address)
        email = normalize_email(email)
        problem = policy_problems(password, email, self.settings)
        if problem:
            raise refused_password("password", problem)
        hashed = await self.passwords.hash(password)
        now = time.time()
        user = User(id=str(uuid.uuid4()), email=email, password_hash=hashed, created_at=now, password_changed_at=now)
        try:
            await self.repository.create_user(user)
        except DuplicateEmail:
            raise ProblemError(409, "An account with this email already exists.", title="Conflict") from None
        log.info("account created: %s", user.id)
        return user

    async def log_in(self, email: str, password: str, address: str) -> Grant:
        """A new session for the account, from a client at ``address``: 429 (throttled, checked before
        any hashing) or 401 (the same answer and work for an unknown email and a wrong password)."""
        email = normalize_email(email)
        await self.throttle.check_login(address, email)
        account = await self.repository.login_account(email)
        # The connection goes back to the pool before the hash: a login may wait its turn for a
        # hashing thread, and a flood of them must not hold every connection the other requests need.
        await self.repository.release()
        ok = await self.passwords.verify(account.password_hash if account else None, password)
        if not ok or account is None:
            raise unauthorized(INVALID_LOGIN)
        if self.passwords.needs_rehash(account.password_hash):
            # Committed with the session below.
            await self.repository.set_password_hash(account.id, await self.passwords.hash(password))
        await self.throttle.remember_address(address, email)
        return await self.sessions.issue(account.id)

    async def change_password(self, user: User, current_password: str, new_password: str) -> None:
        """Replace the password (after checking the current one); every session of the account ends."""
        await self.throttle.check_password_change(user.email)
        # As for a login: no connection held while the hashes wait for a thread and run.
        await self.repository.release()
        if not await self.passwords.verify(user.password_hash, current_password):
            raise unauthorized("The current password is not correct.")
        problem = policy_problems(new_password, user.email, self.settings)
        if problem:
            raise refused_password("new_password", problem)
        hashed = await self.passwords.hash(new_password)
        await self.repository.set_password_hash(user.id, hashed, changed_at=time.time())
        await self.sessions.end_all(user.id)
        log.info("password changed: %s", user.id)

    async def delete(self, user: User, password: str) -> None:
        """Delete the account (confirmed with its password); every token of it stops working, and
        each service in ERASURE_SERVICES is told, in the same transaction, to erase what it holds
        of the account (its documents, its usage and conversations)."""
        await self.repository.release()  # as for a login: none held during the hash
        if not await self.passwords.verify(user.password_hash, password):
            raise unauthorized("The password is not correct.")
        user_id = user.id
        await self.sessions.end_all(user_id, commit=False)
        await self.repository.delete_user(user_id)
        await self.repository.add_erasures(user_id, self.settings.erasure_services, time.time())
        await self.repository.commit()
        await self.revoker.revoke("user", user_id)
        log.info("account deleted: %s", user_id)
