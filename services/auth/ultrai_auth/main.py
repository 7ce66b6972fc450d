"""The auth service's application: the app factory and the lifespan that opens its resources."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from shared.app import Lifespan, create_app
from shared.db import Database
from shared.memory import reuse_blocks
from shared.ratelimit import RateLimiter
from shared.settings import load_settings
from shared.tokens import RevocationStore, TokenVerifier
from ultrai_auth import key_routes
from ultrai_auth.keys import Signer, load_private_key, publish_keys
from ultrai_auth.passwords import PasswordService
from ultrai_auth.repository import AuthRepository
from ultrai_auth.revocation import Revoker
from ultrai_auth.routes import DIRECTORY, PREFIX, router, wellknown
from ultrai_auth.settings import AuthSettings

SERVICE = "auth"
MIGRATIONS = Path(__file__).parent / "migrations"


def lifespan_for(settings: AuthSettings) -> Lifespan:
    """Open what the routes use (on ``app.state``): the signer with its published keys, the password
    hasher, the rate limiter, the revocation writer and the token verifier; close them at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        signer = Signer(settings, await asyncio.to_thread(load_private_key, settings))
        database: Database = app.state.db
        async with database.sessions() as session, session.begin():
            await publish_keys(AuthRepository(session), signer)
        passwords = PasswordService(settings)
        if settings.hash_memory_reuse:
            # Each hash's block is reused, not mapped and faulted in anew (kept until the next trim).
            reuse_blocks(passwords.block_bytes, passwords.block_bytes * settings.hash_concurrency)
        await passwords.start()
        limiter = RateLimiter.for_settings(settings, SERVICE)
        revocations = RevocationStore.for_settings(settings)

        revoker = Revoker(revocations, settings)

        async def jwks() -> dict[str, Any]:
            return signer.jwks()

        async def revoked_here() -> dict[str, dict[str, float]]:
            return revoker.listing()

        # When Redis cannot answer, auth's own list (what this process revoked) answers instead.
        verifier = TokenVerifier(
            settings, SERVICE, jwks_source=jwks, revocations=revocations, revocation_source=revoked_here
        )
        app.state.signer = signer
        app.state.passwords = passwords
        app.state.limiter = limiter
        app.state.revoker = revoker
        app.state.verifier = verifier
        try:
            yield
        finally:
            await verifier.aclose()
            await revocations.close()
            await limiter.close()
            passwords.close()

    return lifespan


def build(settings: AuthSettings | None = None) -> FastAPI:
    settings = settings or load_settings(AuthSettings, SERVICE)
    app = create_app(
        SERVICE,
        settings,
        description="Accounts, argon2id passwords, signed JWT access tokens with a JWKS endpoint, refresh tokens.",
        directory={**DIRECTORY, **key_routes.DIRECTORY},
        api_prefix=PREFIX,
        lifespan=lifespan_for(settings),
        migrations=MIGRATIONS,
        # Every auth body is small; 64 KiB leaves room for the longest valid one with every character
        # JSON-escaped.
        max_body_size=65_536,
    )
    app.include_router(router)
    app.include_router(key_routes.router)
    app.include_router(wellknown)
    return app


app = build()
