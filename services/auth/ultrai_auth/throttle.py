"""Login throttling, checked before any hashing: per client address, per account, per registration.

An address that has logged into an account is remembered for KNOWN_ADDRESS_DAYS and is exempt from
that account's failure limit, so an attacker who fails on purpose cannot lock the owner out.
"""

from __future__ import annotations

import hashlib

from shared.errors import ProblemError
from shared.kv import KeyValue
from shared.ratelimit import Decision, RateLimiter
from ultrai_auth.settings import AuthSettings


def opaque_key(value: str) -> str:
    """A short, non-reversible identifier for rate-limit and key-value keys (no email in Redis)."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def too_many(decision: Decision, detail: str) -> ProblemError:
    return ProblemError(429, detail, title="Too many requests", headers={"Retry-After": str(decision.retry_after)})


class LoginThrottle:
    def __init__(self, limiter: RateLimiter, kv: KeyValue, settings: AuthSettings) -> None:
        self.limiter = limiter
        self.kv = kv
        self.settings = settings

    async def check_registration(self, address: str) -> None:
        decision = await self.limiter.hit(self.settings.register_rate_per_address, "register-ip", address)
        if not decision.allowed:
            raise too_many(decision, "Too many registrations from this address; try again later.")

    async def check_login(self, address: str, email: str) -> None:
        """Count a login attempt from ``address`` for the account ``email``, or raise a 429."""
        decision = await self.limiter.hit(self.settings.login_rate_per_address, "login-ip", address)
        if not decision.allowed:
            raise too_many(decision, "Too many login attempts from this address; try again later.")
        if await self._is_known(address, email):
            return
        decision = await self.limiter.hit(self.settings.login_attempts_per_account, "login-account", opaque_key(email))
        if not decision.allowed:
            raise too_many(decision, "Too many login attempts for this account; try again later.")

    async def check_password_change(self, email: str) -> None:
        decision = await self.limiter.hit(
            self.settings.login_attempts_per_account, "password-change", opaque_key(email)
        )
        if not decision.allowed:
            raise too_many(decision, "Too many attempts for this account; try again later.")

    async def remember_address(self, address: str, email: str) -> None:
        """After a successful login: exempt ``address`` from the account's failure limit for a while."""
        if self.settings.known_address_days > 0:
            await self.kv.set(self._known_key(address, email), b"1", ttl=self.settings.known_address_days * 86_400)

    async def _is_known(self, address: str, email: str) -> bool:
        return self.settings.known_address_days > 0 and await self.kv.get(self._known_key(address, email)) is not None

    @staticmethod
    def _known_key(address: str, email: str) -> str:
        return f"known:{opaque_key(email)}:{opaque_key(address)}"
