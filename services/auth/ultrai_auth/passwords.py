"""argon2id hashing off the event loop, with a bound on concurrent hashes, and the password policy.

Hashes run in a dedicated thread pool of HASH_CONCURRENCY threads (argon2-cffi releases the GIL), so
at most HASH_CONCURRENCY × ARGON2_MEMORY_KIB of hashing memory is in use at any time; at most
HASH_QUEUE more requests may wait, and beyond that the service answers 503 with Retry-After instead of
piling up work. Login for an unknown email verifies against a dummy hash made with the same
parameters, so it costs the same as a wrong password.

Policy (NIST SP 800-63B §3.1.1.2): at least PASSWORD_MIN_LENGTH characters after NFKC normalisation,
at most 1024 (long passphrases welcome, checked before any hashing), no composition
rules, and no password from the bundled list of common ones or equal to the email.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import TypeVar, TypeVarTuple

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from shared.errors import ProblemError
from ultrai_auth.settings import AuthSettings

# Long passphrases are welcome; anything longer is refused (422) before any hashing.
MAX_PASSWORD_CHARS = 1024
COMMON_FILE = Path(__file__).parent / "data" / "common-passwords.txt"

T = TypeVar("T")
Args = TypeVarTuple("Args")


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    lines = COMMON_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


def normalize_password(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def policy_problems(password: str, email: str, settings: AuthSettings) -> str | None:
    """Why ``password`` is refused, or None."""
    pw = normalize_password(password)
    if len(pw) < settings.password_min_length:
        return f"The password must have at least {settings.password_min_length} characters."
    if len(pw) > MAX_PASSWORD_CHARS:
        return f"The password must have at most {MAX_PASSWORD_CHARS} characters."
    lowered = pw.lower()
    if lowered in common_passwords() or len(set(pw)) == 1:
        return "This password is too common; choose another (a passphrase of several words works well)."
    if lowered in (email.lower(), email.split("@")[0].lower()):
        return "The password must not be your email address."
    return None


def _lower_priority(nice: int) -> None:
    """Run this hashing thread at a lower CPU priority than the event loop's thread (Linux applies
    nice values per thread), so a login storm slows logins, not every other request."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:
        pass  # not permitted here: hashing just runs at normal priority


class PasswordService:
    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self.pool = ThreadPoolExecutor(
            max_workers=settings.hash_concurrency,
            thread_name_prefix="argon2",
            initializer=_lower_priority,
            initargs=(settings.hash_thread_nice,),
        )
        self._slots = asyncio.Semaphore(settings.hash_concurrency + settings.hash_queue)
        # What one hash allocates: its memory cost, and room for the allocator's own bookkeeping.
        self.block_bytes = settings.argon2_memory_kib * 1024 + 64 * 1024
        self._dummy: str | None = None
        self.calls = 0  # argon2 operations started (hashes and verifications)

    async def start(self) -> None:
        # A hash of a random password with the current parameters, for unknown-email logins.
        self._dummy = await self._run(self.hasher.hash, secrets.token_urlsafe(24))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[[*Args], T], *args: *Args) -> T:
        if self._slots.locked():
            raise ProblemError(
                503,
                "Too many sign-ins are being processed; try again shortly.",
                title="Service busy",
                headers={"Retry-After": "2"},
            )
        async with self._slots:
            self.calls += 1
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def hash(self, password: str) -> str:
        return await self._run(self.hasher.hash, normalize_password(password))

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self.hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def verify(self, stored: str | None, password: str) -> bool:
        """Check ``password`` against ``stored``; with ``stored=None`` do the same work and fail."""
        if stored is None:
            assert self._dummy is not None, "PasswordService.start() was not awaited"
            await self._run(self._verify, self._dummy, normalize_password(password))
            return False
        return await self._run(self._verify, stored, normalize_password(password))

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True
