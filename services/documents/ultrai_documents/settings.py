"""The documents service's settings, read from the environment (see .env.example)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from shared.settings import CommaList, ErasingSettings, ServiceURL

MB = 1024 * 1024


class DocumentsSettings(ErasingSettings):
    llm_url: ServiceURL = "http://127.0.0.1:8003"

    # Uploads: the limit counts the file's bytes as they arrive.
    max_upload_bytes: int = Field(25 * MB, ge=1, le=2048 * MB)
    upload_overhead_bytes: int = Field(64 * 1024, ge=1024, le=MB)
    max_multipart_parts: int = Field(8, ge=1, le=1000)
    max_field_bytes: int = Field(16 * 1024, ge=64, le=MB)
    max_filename_chars: int = Field(255, ge=16, le=1024)

    # Per-user quota.
    quota_max_documents: int = Field(200, ge=1)
    quota_max_bytes: int = Field(1024 * MB, ge=1)

    # Extraction runs in a child process with these limits.
    extract_memory_mb: int = Field(768, ge=64, le=16384)
    extract_cpu_seconds: int = Field(30, ge=1, le=3600)
    extract_timeout_seconds: float = Field(60.0, gt=0, le=3600)
    extract_concurrency: int = Field(2, ge=1, le=64)
    max_text_chars: int = Field(30_000_000, ge=1000)
    # DOCX (zip) pre-checks.
    docx_max_entries: int = Field(2000, ge=10)
    docx_max_uncompressed_bytes: int = Field(200 * MB, ge=MB)
    docx_max_ratio: float = Field(100.0, ge=2)
    docx_max_part_bytes: int = Field(100 * MB, ge=MB)
    # PDF pre-checks.
    pdf_max_pages: int = Field(2000, ge=1)
    pdf_max_stream_bytes: int = Field(64 * MB, ge=MB)
    # JSON/HTML/XML nesting.
    max_nesting_depth: int = Field(256, ge=8, le=10_000)

    # Chunks (tokens are estimated; see extraction/chunking.py).
    chunk_tokens: int = Field(1500, ge=50, le=200_000)
    chunk_overlap_tokens: int = Field(150, ge=0, le=50_000)

    # Analyses.
    # where analyses run: "auto" is the queue when REDIS_URL is set, else this process.
    analysis_runner: Literal["auto", "inprocess", "queue"] = "auto"
    # with the queue: the documents web process also runs queued analyses (no worker service needed).
    analysis_web_consumes: bool = False
    # seconds a worker may go without beating its job's heartbeat before another takes it over.
    analysis_heartbeat_seconds: int = Field(30, ge=1, le=3600)
    # how often a worker sweeps the queue for jobs whose worker stopped beating.
    analysis_sweep_seconds: int = Field(15, ge=1, le=3600)
    # deliveries of one analysis at most (the first and the takeovers after a worker died).
    analysis_attempts: int = Field(3, ge=1, le=20)
    # the longest an analysis may run (the job's timeout).
    analysis_timeout_seconds: int = Field(3600, ge=10, le=86_400)
    # seconds a stopping worker waits for its running analyses before handing them back to the queue.
    analysis_shutdown_grace_seconds: int = Field(20, ge=0, le=3600)
    # seconds the in-process runner's heartbeat may be silent before another instance takes over.
    analysis_lease_seconds: float = Field(30.0, ge=1, le=3600)
    analysis_default_models: CommaList = Field(default_factory=list)
    analysis_max_models: int = Field(8, ge=1, le=32)
    analysis_context_tokens: int = Field(6000, ge=200)
    analysis_max_chunks: int = Field(64, ge=1, le=10_000)
    analysis_concurrency: int = Field(4, ge=1, le=64)
    analysis_max_active_per_user: int = Field(5, ge=1, le=1000)
    analysis_workers: int = Field(8, ge=1, le=256)
    llm_timeout_seconds: float = Field(300.0, gt=0, le=3600)
    # seconds starting an analysis waits for the llm service's estimate (the budget check); past it, or
    # with the llm service unreachable, the analysis is queued without the check.
    analysis_budget_check_seconds: float = Field(5.0, gt=0, le=60)
    # without Redis: how often an analysis event stream reads the database for news.
    sse_poll_seconds: float = Field(0.25, gt=0, le=10)
    # with Redis (news is pushed): how often a stream reads anyway, in case a notification was lost.
    sse_fallback_seconds: float = Field(5.0, gt=0, le=60)
    # seconds a single-use ticket to an analysis' event stream (for a browser's EventSource) stays valid.
    analysis_ticket_seconds: int = Field(60, ge=1, le=3600)

    @property
    def uses_queue(self) -> bool:
        """Whether analyses go through the Redis queue (to the workers)."""
        if self.analysis_runner == "auto":
            return bool(self.redis_url)
        return self.analysis_runner == "queue"

    @property
    def upload_folder(self) -> Path:
        """Where uploads are written while they arrive and are read (emptied at every start)."""
        return Path(self.data_dir) / "documents-tmp"

    @field_validator("analysis_runner")
    @classmethod
    def _queue_needs_redis(cls, value: str, info: Any) -> str:
        if value == "queue" and not info.data.get("redis_url"):
            raise ValueError("queue needs REDIS_URL")
        return value

    @field_validator("chunk_overlap_tokens")
    @classmethod
    def _overlap(cls, value: int, info: Any) -> int:
        size = info.data.get("chunk_tokens")
        if size is not None and value >= size:
            raise ValueError("must be smaller than CHUNK_TOKENS")
        return value
