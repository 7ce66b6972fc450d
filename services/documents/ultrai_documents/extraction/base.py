"""What every format's extractor shares: the limits it works under, its result and its refusal."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

SUPPORTED = ("PDF", "DOCX", "plain text", "Markdown", "HTML", "CSV", "JSON")

MEDIA_TYPES = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "text": "text/plain; charset=utf-8",
    "markdown": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
}


class ExtractionError(Exception):
    """A file we refuse. ``status`` is the HTTP answer: 415 (unsupported type) or 422 (bad/hostile)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def unsupported(what: str) -> ExtractionError:
    return ExtractionError(415, f"{what}. Supported types: {', '.join(SUPPORTED)}.")


def short_reason(exc: BaseException) -> str:
    """The first line of a parser's error, bounded, for the refusal's reason."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


@dataclass
class Limits:
    max_text_chars: int = 30_000_000
    docx_max_entries: int = 2000
    docx_max_uncompressed_bytes: int = 200 * 1024 * 1024
    docx_max_ratio: float = 100.0
    docx_max_part_bytes: int = 100 * 1024 * 1024
    pdf_max_pages: int = 2000
    pdf_max_stream_bytes: int = 64 * 1024 * 1024
    max_nesting_depth: int = 256
    chunk_tokens: int = 1500
    chunk_overlap_tokens: int = 150

    @classmethod
    def of(cls, settings: object) -> Limits:
        """The limits the settings set: each from the setting of the same name."""
        return cls(**{limit.name: getattr(settings, limit.name) for limit in fields(cls)})


@dataclass
class Extracted:
    kind: str
    text: str
    page_count: int | None = None
    encoding: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.kind]
