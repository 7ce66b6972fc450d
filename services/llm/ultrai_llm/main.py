"""The llm service's application."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from shared.app import create_app
from shared.settings import load_settings
from ultrai_llm.settings import LlmSettings

SERVICE = "llm"
PREFIX = "/api/v1/llm"
DIRECTORY = {
    PREFIX: "this directory",
}


def build(settings: LlmSettings | None = None) -> FastAPI:
    settings = settings or load_settings(LlmSettings, SERVICE)
    app = create_app(
        SERVICE,
        settings,
        description="Multi-model orchestration on litellm, an OpenAI-compatible API, a response cache and usage.",
        directory=DIRECTORY,
        database=True,
    )

    @app.get(PREFIX, summary="The llm API directory", tags=["meta"])
    async def directory() -> dict[str, Any]:
        return {"service": SERVICE, "api": DIRECTORY}

    return app


app = build()
