"""Analyses: several models read a document through the llm service, and one synthesises.

Each model is asked on its own (one orchestration call per model), so its answer is reported the
moment it arrives and its failure touches no other model; the synthesis model then combines the
answers that succeeded. A document longer than the context budget is analysed chunk by chunk
(map) and each model's partial answers are combined (reduce) before the synthesis.

State lives in the database (the analysis row and its events), so any instance can answer a poll
or an event stream. ``Runner`` is the one interface to where the work runs: ``InProcessRunner``
runs it as tasks in this process (the default); a queue-backed runner can replace it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import httpx
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.client import ServiceClient
from ultrai_documents.models import Analysis, AnalysisEvent, Chunk, Document, utcnow
from ultrai_documents.settings import DocumentsSettings
from ultrai_documents.store import full_text

log = logging.getLogger("ultrai_documents.analyses")

ORCHESTRATE = "/api/v1/llm/orchestrate"
TERMINAL = ("completed", "failed")


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
        return {
            "kind": self.kind,
            "question": self.question,
            "fields": self.fields,
            "instruction": self.instruction,
            "models": models,
            "synthesis_model": synthesis_model,
        }


def params_hash(params: dict[str, Any]) -> str:
    key = dict(params)
    key["models"] = sorted(key["models"])
    return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def task_text(params: dict[str, Any]) -> str:
    kind = params["kind"]
    if kind == "summary":
        return "Summarise the document: its purpose, main points and conclusions, in a few short paragraphs."
    if kind == "qa":
        return (
            "Answer the question using only the document; say so plainly if the document does not answer it.\n"
            f"Question: {params['question']}"
        )
    if kind == "extract":
        fields = ", ".join(json.dumps(f, ensure_ascii=False) for f in params["fields"])
        return (
            "Extract these fields from the document and answer with one JSON object whose keys are the field "
            f"names (null where the document does not say): {fields}"
        )
    return f"Follow this instruction about the document: {params['instruction']}"


# --------------------------------------------------------------------------------------- runner


class Runner(Protocol):
    """Where analyses run. ``submit`` hands over an analysis in status ``queued``; the work claims
    it (queued -> running) in the database, so a runner may deliver one more than once."""

    async def submit(self, analysis_id: str) -> None: ...

    async def aclose(self) -> None: ...


class InProcessRunner:
    """Analyses as tasks in this process, at most ``concurrency`` at once; the work does not depend
    on the client that asked for it (it survives the request)."""

    def __init__(self, work: Callable[[str], Awaitable[None]], concurrency: int = 4) -> None:
        self._work = work
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task] = set()

    async def submit(self, analysis_id: str) -> None:
        task = asyncio.create_task(self._run(analysis_id), name=f"analysis-{analysis_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, analysis_id: str) -> None:
        async with self._slots:
            await self._work(analysis_id)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# -------------------------------------------------------------------------------------- the work


class LLMError(Exception):
    pass


class Analyst:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], llm: ServiceClient, settings: DocumentsSettings
    ) -> None:
        self.sessions = sessions
        self.llm = llm
        self.settings = settings
        self._windows: dict[str, int] = {}
        self._windows_at = -1e9

    async def event(self, analysis_id: str, event: str, data: dict[str, Any], **changes: Any) -> None:
        async with self.sessions() as session:
            session.add(AnalysisEvent(analysis_id=analysis_id, event=event, data=data))
            if changes:
                await session.execute(update(Analysis).where(Analysis.id == analysis_id).values(**changes))
            await session.commit()

    async def run(self, analysis_id: str) -> None:
        try:
            await self._run(analysis_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("analysis %s failed", analysis_id)
            try:
                await self.event(
                    analysis_id,
                    "failed",
                    {"status": "failed", "error": "The analysis failed on our side."},
                    status="failed",
                    error=f"internal error ({type(exc).__name__})",
                    finished_at=utcnow(),
                )
            except Exception:
                log.exception("could not record the failure of analysis %s", analysis_id)

    async def _run(self, analysis_id: str) -> None:
        started = time.perf_counter()
        async with self.sessions() as session:
            # Claimed atomically: of two processes handed the same analysis, one runs it.
            claimed = await session.execute(
                update(Analysis)
                .where(Analysis.id == analysis_id, Analysis.status == "queued")
                .values(status="running", stage="extraction", started_at=utcnow())
            )
            if claimed.rowcount != 1:
                return
            session.add(AnalysisEvent(analysis_id=analysis_id, event="status", data={"status": "running"}))
            await session.commit()
            analysis = await session.get(Analysis, analysis_id)
            doc = await session.get(Document, analysis.document_id) if analysis is not None else None
            if analysis is None or doc is None:
                return
            owner, params = analysis.owner_id, analysis.params
            token_count, chunk_count = doc.token_count, doc.chunk_count
        budget = await self.context_budget(params["models"])
        map_reduce = token_count > budget and chunk_count > 1
        async with self.sessions() as session:
            if map_reduce:
                parts = list(
                    (
                        await session.scalars(
                            select(Chunk.text).where(Chunk.document_id == analysis.document_id).order_by(Chunk.seq)
                        )
                    ).all()
                )
            else:
                parts = [await full_text(session, analysis.document_id)]
        await self.event(
            analysis_id,
            "stage",
            {"stage": "extraction", "tokens": token_count, "chunks": len(parts), "map_reduce": map_reduce},
        )
        models: list[str] = params["models"]
        task = task_text(params)
        await self.event(analysis_id, "stage", {"stage": "models", "models": models}, stage="models")
        results = await asyncio.gather(*(self._model(analysis_id, owner, m, task, parts) for m in models))
        ok = [r for r in results if r["status"] == "ok"]
        synthesis = None
        if ok and params.get("synthesis_model"):
            await self.event(
                analysis_id, "stage", {"stage": "synthesis", "model": params["synthesis_model"]}, stage="synthesis"
            )
            synthesis = await self._synthesis(owner, params["synthesis_model"], task, ok)
            await self.event(analysis_id, "synthesis", _public(synthesis))
        usage = {
            "prompt_tokens": sum(r["prompt_tokens"] for r in [*results, *([synthesis] if synthesis else [])]),
            "completion_tokens": sum(r["completion_tokens"] for r in [*results, *([synthesis] if synthesis else [])]),
            "cost_usd": round(sum(r["cost_usd"] for r in [*results, *([synthesis] if synthesis else [])]), 8),
        }
        if not ok:
            errors = "; ".join(f"{r['model']}: {r['error']}" for r in results)
            await self.event(
                analysis_id,
                "failed",
                {"status": "failed", "error": "Every model failed.", "results": [_public(r) for r in results]},
                status="failed",
                stage=None,
                error=f"Every model failed ({errors})"[:2000],
                result={"models": results, "synthesis": None, "answer": None, "usage": usage},
                finished_at=utcnow(),
                **_usage_columns(usage),
            )
            return
        answer = synthesis["text"] if synthesis and synthesis["status"] == "ok" else ok[0]["text"]
        result = {
            "answer": answer,
            "models": results,
            "synthesis": synthesis,
            "map_reduce": {"chunks": len(parts)} if map_reduce else None,
            "usage": usage,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        await self.event(
            analysis_id,
            "completed",
            {"status": "completed", "failed_models": [r["model"] for r in results if r["status"] != "ok"]},
            status="completed",
            stage=None,
            result=result,
            finished_at=utcnow(),
            **_usage_columns(usage),
        )

    async def _model(self, analysis_id: str, owner: str, model: str, task: str, parts: list[str]) -> dict[str, Any]:
        started = time.perf_counter()
        totals = {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
        try:
            if len(parts) == 1:
                text = await self._ask(owner, model, task, [parts[0]], totals)
            else:
                slots = asyncio.Semaphore(self.settings.analysis_concurrency)

                async def one(i: int, part: str) -> str:
                    async with slots:
                        prompt = (
                            f"This is part {i + 1} of {len(parts)} of a long document. The task for the whole "
                            f"document is below. Note everything in this part that bears on the task, "
                            f"concisely.\nTask: {task}"
                        )
                        return await self._ask(owner, model, prompt, [part], totals)

                notes = await asyncio.gather(*(one(i, p) for i, p in enumerate(parts)))
                await self.event(analysis_id, "progress", {"model": model, "stage": "map", "parts": len(parts)})
                text = await self._reduce(owner, model, task, notes, totals)
            result = {"model": model, "status": "ok", "text": text, "error": None}
        except LLMError as exc:
            result = {"model": model, "status": "error", "text": None, "error": str(exc)}
        result.update(totals)
        result["cost_usd"] = round(result["cost_usd"], 8)
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        await self.event(analysis_id, "model", _public(result))
        return result

    async def context_budget(self, models: list[str]) -> int:
        """Tokens of document one request may carry: ANALYSIS_CONTEXT_TOKENS, or half the smallest
        context window among the models when the llm service reports a smaller one (the rest is
        left for the instructions and the answer)."""
        budget = self.settings.analysis_context_tokens
        windows = await self._context_windows()
        known = [windows[m] for m in models if windows.get(m)]
        if known:
            budget = min(budget, max(min(known) // 2, 100))
        return budget

    async def _context_windows(self) -> dict[str, int]:
        if time.monotonic() - self._windows_at < 300:
            return self._windows
        try:
            resp = await self.llm.get("/api/v1/llm/models", timeout=5.0)
            models = resp.json().get("models", []) if resp.status_code == 200 else []
            self._windows = {
                m["name"]: int(m["context_window"]) for m in models if isinstance(m.get("context_window"), int)
            }
            self._windows_at = time.monotonic()
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError, RuntimeError):
            pass  # the configured budget stands; asked again next time
        return self._windows

    async def _reduce(self, owner: str, model: str, task: str, notes: list[str], totals: dict) -> str:
        from ultrai_documents.extraction.chunking import estimate_tokens

        budget = self.settings.analysis_context_tokens
        while True:
            groups: list[list[str]] = [[]]
            size = 0
            for note in notes:
                t = estimate_tokens(note)
                if groups[-1] and size + t > budget:
                    groups.append([])
                    size = 0
                groups[-1].append(note)
                size += t
            prompt = (
                "The context holds notes taken from consecutive parts of one document, in order. Using only them, "
                f"do the task for the whole document.\nTask: {task}"
            )
            combined = [
                await self._ask(owner, model, prompt, [f"[Part {i + 1}]\n{n}" for i, n in enumerate(g)], totals)
                for g in groups
            ]
            if len(combined) == 1:
                return combined[0]
            notes = combined

    async def _synthesis(self, owner: str, model: str, task: str, answers: list[dict]) -> dict[str, Any]:
        started = time.perf_counter()
        totals = {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
        prompt = (
            "Several models answered the same task about a document; their answers are in the context. Combine "
            "them into one answer: keep what they agree on, resolve or flag disagreements, and add nothing that "
            f"none of them says.\nTask: {task}"
        )
        context = [f"[Answer from {a['model']}]\n{a['text']}" for a in answers]
        try:
            text = await self._ask(owner, model, prompt, context, totals)
            result = {"model": model, "status": "ok", "text": text, "error": None}
        except LLMError as exc:
            result = {"model": model, "status": "error", "text": None, "error": str(exc)}
        result.update(totals)
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return result

    async def _ask(self, owner: str, model: str, prompt: str, context: list[str], totals: dict) -> str:
        body = {"prompt": prompt, "context": context, "models": [model], "pattern": "parallel", "stream": False}
        try:
            resp = await self.llm.post(
                ORCHESTRATE,
                json=body,
                headers={"X-On-Behalf-Of": owner},
                timeout=self.settings.llm_timeout_seconds,
            )
        except httpx.HTTPError as exc:
            raise LLMError(f"the llm service could not be reached ({type(exc).__name__})") from None
        except RuntimeError as exc:  # no service token (auth unreachable or refused)
            raise LLMError(f"no service token for the llm service ({exc})") from None
        if resp.status_code != 200:
            raise LLMError(_problem_detail(resp))
        try:
            answer = resp.json()
            item = next((r for r in answer.get("results", []) if r.get("model") == model), None)
        except (ValueError, AttributeError):
            raise LLMError("the llm service answered with an unreadable body") from None
        if item is None:
            raise LLMError("the llm service's answer has no result for this model")
        totals["prompt_tokens"] += int(item.get("prompt_tokens") or 0)
        totals["completion_tokens"] += int(item.get("completion_tokens") or 0)
        totals["cost_usd"] += float(item.get("cost_usd") or 0.0)
        if item.get("status") != "ok":
            raise LLMError(str(item.get("error") or "the model failed"))
        return str(item.get("text") or "")


def _problem_detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        detail = body.get("detail") or body.get("title")
    except (ValueError, AttributeError):
        detail = None
    return f"llm service answered {resp.status_code}" + (f": {detail}" if detail else "")


def _public(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("model", "status", "error", "latency_ms", "prompt_tokens", "completion_tokens", "cost_usd")
    return {k: result.get(k) for k in keys}


def _usage_columns(usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "cost_usd": usage["cost_usd"],
    }


async def active_count(session: AsyncSession, owner_id: str) -> int:
    return int(
        await session.scalar(
            select(func.count(Analysis.id)).where(
                Analysis.owner_id == owner_id, Analysis.status.in_(("queued", "running"))
            )
        )
        or 0
    )
