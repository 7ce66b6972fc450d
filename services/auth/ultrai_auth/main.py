"""The auth service's application."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select, update

from shared.app import create_app
from shared.ratelimit import RateLimiter
from shared.settings import load_settings
from shared.tokens import RevocationStore, TokenVerifier
from ultrai_auth.keys import Signer, load_private_key
from ultrai_auth.models import SigningKey
from ultrai_auth.passwords import PasswordService
from ultrai_auth.revocation import Revoker
from ultrai_auth.routes import PREFIX, router, wellknown
from ultrai_auth.settings import AuthSettings

SERVICE = "auth"
MIGRATIONS = Path(__file__).parent / "migrations"
DIRECTORY = {
    PREFIX: "this directory",
    f"{PREFIX}/register": "POST email and password: create an account",
    f"{PREFIX}/login": "POST email and password: access and refresh tokens",
    f"{PREFIX}/refresh": "POST refresh_token: new tokens (the old refresh token is spent)",
    f"{PREFIX}/logout": "POST refresh_token: end the session",
    f"{PREFIX}/me": "GET the current account; DELETE it (with the password)",
    f"{PREFIX}/password": "POST current_password and new_password: change it (ends every session)",
    f"{PREFIX}/service-token": "POST (internal): a short-lived service token",
    "/.well-known/jwks.json": "the public signing keys",
}


async def publish_keys(app: FastAPI, signer: Signer) -> None:
    """Record the current key, retire the others, and publish those still within a token lifetime."""
    now = time.time()
    async with app.state.db.sessions() as session, session.begin():
        current = await session.get(SigningKey, signer.kid)
        if current is None:
            session.add(SigningKey(kid=signer.kid, jwk=json.dumps(signer.jwk), first_used_at=now))
        elif current.retired_at is not None:
            current.retired_at = None
        await session.execute(
            update(SigningKey)
            .where(SigningKey.kid != signer.kid, SigningKey.retired_at.is_(None))
            .values(retired_at=now)
        )
        rows = (
            await session.execute(select(SigningKey).where(SigningKey.retired_at > now - signer.retention_seconds))
        ).scalars()
        for row in rows:
            if row.kid != signer.kid:
                signer.publish(json.loads(row.jwk), until=row.retired_at + signer.retention_seconds)


def build(settings: AuthSettings | None = None) -> FastAPI:
    settings = settings or load_settings(AuthSettings, SERVICE)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        signer = Signer(settings, await asyncio.to_thread(load_private_key, settings))
        await publish_keys(app, signer)
        passwords = PasswordService(settings)
        await passwords.start()
        limiter = RateLimiter(
            settings.redis_url, prefix=settings.redis_key_prefix, timeout=settings.redis_timeout, service=SERVICE
        )
        revocations = RevocationStore.for_settings(settings)

        async def jwks() -> dict[str, Any]:
            return signer.jwks()

        verifier = TokenVerifier(settings, SERVICE, jwks_source=jwks, revocations=revocations)
        app.state.signer = signer
        app.state.passwords = passwords
        app.state.limiter = limiter
        app.state.revoker = Revoker(revocations, settings)
        app.state.verifier = verifier
        try:
            yield
        finally:
            await verifier.aclose()
            await revocations.close()
            await limiter.close()
            passwords.close()

    app = create_app(
        SERVICE,
        settings,
        description="Accounts, argon2id passwords, signed JWT access tokens with a JWKS endpoint, refresh tokens.",
        directory=DIRECTORY,
        api_prefix=PREFIX,
        lifespan=lifespan,
        migrations=MIGRATIONS,
        # Every auth body is small; 64 KiB leaves room for the longest valid one with every character
        # JSON-escaped.
        max_body_size=65_536,
    )

    app.include_router(router)
    app.include_router(wellknown)
    return app


app = build()
