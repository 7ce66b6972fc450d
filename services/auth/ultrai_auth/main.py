"""The auth service's application."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from shared.app import create_app
from shared.settings import load_settings
from ultrai_auth.settings import AuthSettings

SERVICE = "auth"
PREFIX = "/api/v1/auth"
DIRECTORY = {
    PREFIX: "this directory",
}


def build(settings: AuthSettings | None = None) -> FastAPI:
    settings = settings or load_settings(AuthSettings, SERVICE)
    app = create_app(
        SERVICE,
        settings,
        description="Accounts, argon2id passwords, signed JWT access tokens with a JWKS endpoint, refresh tokens.",
        directory=DIRECTORY,
        database=True,
    )

    @app.get(PREFIX, summary="The auth API directory", tags=["meta"])
    async def directory() -> dict[str, Any]:
        return {"service": SERVICE, "api": DIRECTORY}

    return app


app = build()
