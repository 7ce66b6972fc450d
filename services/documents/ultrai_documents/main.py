"""The documents service's application."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from shared.app import create_app
from shared.settings import load_settings
from ultrai_documents.settings import DocumentsSettings

SERVICE = "documents"
PREFIX = "/api/v1/documents"
DIRECTORY = {
    PREFIX: "this directory",
}


def build(settings: DocumentsSettings | None = None) -> FastAPI:
    settings = settings or load_settings(DocumentsSettings, SERVICE)
    app = create_app(
        SERVICE,
        settings,
        description="Upload, type detection, text extraction, chunking, storage and multi-model analyses.",
        directory=DIRECTORY,
        database=True,
    )

    @app.get(PREFIX, summary="The documents API directory", tags=["meta"])
    async def directory() -> dict[str, Any]:
        return {"service": SERVICE, "api": DIRECTORY}

    return app


app = build()
