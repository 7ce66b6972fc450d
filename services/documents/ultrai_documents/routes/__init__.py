"""The documents API: one router per resource. Handlers only translate between HTTP and the
services (documents.py, analysis/service.py); deps.py builds those services."""

from __future__ import annotations

from fastapi import APIRouter

from ultrai_documents.routes import analyses, documents
from ultrai_documents.schemas import PREFIX

ROUTERS: tuple[APIRouter, ...] = (documents.router, analyses.router)

# What ``GET /`` lists.
DIRECTORY = {
    f"POST {PREFIX}": "upload a document (multipart field 'file')",
    f"GET {PREFIX}": "your documents, newest first (cursor pagination)",
    f"GET {PREFIX}/{{id}}": "one document's metadata",
    f"GET {PREFIX}/{{id}}/text": "its extracted text (UTF-8)",
    f"GET {PREFIX}/{{id}}/chunks": "its chunks",
    f"GET {PREFIX}/{{id}}/download": "the original file",
    f"DELETE {PREFIX}/{{id}}": "delete it with its chunks and analyses",
    f"POST {PREFIX}/{{id}}/analyses": "start an analysis (202 + URL)",
    f"GET {PREFIX}/{{id}}/analyses/{{analysis_id}}": "an analysis' status and result",
    f"POST {PREFIX}/{{id}}/analyses/{{analysis_id}}/ticket": "a single-use ticket to its events (for EventSource)",
    f"GET {PREFIX}/{{id}}/analyses/{{analysis_id}}/events": "its progress as server-sent events (?ticket= or a token)",
    f"POST {PREFIX}/{{id}}/analyses/{{analysis_id}}/cancel": "stop it (queued or running)",
}
