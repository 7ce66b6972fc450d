"""The API's request and response bodies, and how a stored row becomes one."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, model_validator

from ultrai_documents.models import Analysis, Chunk, Document

PREFIX = "/api/v1/documents"
M = TypeVar("M", bound=BaseModel)


def document_url(document_id: str) -> str:
    return f"{PREFIX}/{document_id}"


def document_links(document_id: str) -> dict[str, str]:
    base = document_url(document_id)
    return {"self": base, "text": f"{base}/text", "download": f"{base}/download", "analyses": f"{base}/analyses"}


def analysis_url(analysis: Analysis) -> str:
    return f"{PREFIX}/{analysis.document_id}/analyses/{analysis.id}"


def from_row(model: type[M], row: object, **others: Any) -> M:
    """A response body from a stored row: each field not given in ``others`` is the row's attribute
    of the same name."""
    return model(**{name: getattr(row, name) for name in model.model_fields if name not in others}, **others)


# ---- documents ---------------------------------------------------------------------------------
class DocumentOut(BaseModel):
    id: str
    name: str
    kind: str
    media_type: str
    size_bytes: int
    sha256: str
    page_count: int | None
    encoding: str | None
    char_count: int
    token_count: int
    chunk_count: int
    created_at: datetime
    links: dict[str, str]

    @classmethod
    def of(cls, doc: Document) -> DocumentOut:
        return from_row(cls, doc, links=document_links(doc.id))


class DocumentCreated(DocumentOut):
    duplicate: bool = False

    @classmethod
    def of_upload(cls, doc: Document, *, duplicate: bool) -> DocumentCreated:
        return from_row(cls, doc, links=document_links(doc.id), duplicate=duplicate)


class DocumentPage(BaseModel):
    items: list[DocumentOut]
    next_cursor: str | None


class ChunkOut(BaseModel):
    seq: int
    start_char: int
    end_char: int
    token_count: int
    text: str

    @classmethod
    def of(cls, chunk: Chunk) -> ChunkOut:
        return from_row(cls, chunk)


# ---- analyses ----------------------------------------------------------------------------------
class AnalysisRequest(BaseModel):
    kind: Literal["summary", "qa", "extract", "custom"]
    question: str | None = Field(None, min_length=1, max_length=4000)
    fields: list[str] | None = Field(None, min_length=1, max_length=100)
    instruction: str | None = Field(None, min_length=1, max_length=8000)
    models: list[str] | None = Field(None, min_length=1, max_length=32)
    synthesis_model: str | None = Field(None, min_length=1, max_length=200)
    fresh: bool = False

    @model_validator(mode="after")
    def _by_kind(self) -> AnalysisRequest:
        needed = {"qa": "question", "extract": "fields", "custom": "instruction"}.get(self.kind)
        if needed and getattr(self, needed) is None:
            raise ValueError(f"kind '{self.kind}' needs '{needed}'")
        for name in ("question", "fields", "instruction"):
            if name != needed and getattr(self, name) is not None:
                raise ValueError(f"'{name}' does not apply to kind '{self.kind}'")
        if self.fields is not None and any(not f.strip() or len(f) > 200 for f in self.fields):
            raise ValueError("each field name must be 1 to 200 characters")
        if self.models is not None and any(not m.strip() or len(m) > 200 for m in self.models):
            raise ValueError("each model name must be 1 to 200 characters")
        return self

    def params(self, models: list[str], synthesis_model: str | None) -> dict[str, Any]:
        """What the analysis stores and runs on (and what makes two requests the same analysis)."""
        return {
            "kind": self.kind,
            "question": self.question,
            "fields": self.fields,
            "instruction": self.instruction,
            "models": models,
            "synthesis_model": synthesis_model,
        }


class AnalysisOut(BaseModel):
    id: str
    document_id: str
    kind: str
    params: dict[str, Any]
    status: str
    stage: str | None
    result: dict[str, Any] | None
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    reused: bool = False
    links: dict[str, str]

    @classmethod
    def of(cls, analysis: Analysis, reused: bool = False) -> AnalysisOut:
        url = analysis_url(analysis)
        links = {"self": url, "events": f"{url}/events", "document": document_url(analysis.document_id)}
        return from_row(cls, analysis, reused=reused, links=links)


class TicketOut(BaseModel):
    ticket: str = Field(description="Pass as ?ticket= to the analysis' events URL; valid once.")
    expires_in: int = Field(description="Seconds until the ticket expires unused.")


class EstimateBudget(BaseModel):
    usd_per_day: float | None = Field(description="The user's daily llm budget")
    key_usd_per_day: float | None = Field(description="The API key's daily budget (with a key)")
    remaining_usd: float | None = Field(description="What is left today of the tighter of both; null: no budget")
    fits: bool = Field(description="The analysis' high estimate fits in what is left")
    over_by_usd: float | None = Field(description="How much the high estimate exceeds what is left")
    tokens_per_day: int | None
    remaining_tokens: int | None
    fits_tokens: bool


class AnalysisEstimate(BaseModel):
    """The sum of the llm service's estimates of the orchestrations the analysis would make."""

    models: list[str]
    synthesis_model: str | None
    map_reduce: dict[str, int] | None = Field(description="{chunks}: the document is read chunk by chunk")
    orchestrations: int = Field(description="The orchestrate requests the analysis would make")
    orchestrations_per_step: dict[str, int] = Field(
        description="By step: answer (one per model), or map (one per chunk and model) and reduce (one per "
        "model; a further round when the notes do not fit together is not counted); synthesis (one)"
    )
    calls: int = Field(description="Planned provider calls in all")
    refused: dict[str, str] = Field(description="Models the llm service refuses before any call, and why")
    input_tokens: dict[str, int] = Field(
        description="low: the answers a step reads (notes, models' answers) counted empty; high: at their output "
        "estimate"
    )
    output_tokens: int
    cost_usd: dict[str, float] = Field(description="low and high")
    wall_time_ms: float | None = Field(description="From the models' recent latencies; null without recent calls")
    budget: EstimateBudget
