"""The work of one analysis: several models read the document, one synthesises their answers.

Each model is asked on its own (one orchestration call per model), so its answer is reported the
moment it arrives and its failure touches no other model; the synthesis model then combines the
answers that succeeded. A document longer than the context budget is analysed chunk by chunk
(map) and each model's partial answers are combined (reduce) before the synthesis. Every step is
recorded as an event of the analysis, in the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.client import ServiceClient
from ultrai_documents.analysis.prompts import notes_prompt, part_prompt, synthesis_prompt, task_text
from ultrai_documents.extraction.chunking import estimate_tokens
from ultrai_documents.llm import Caller, LLMError, ModelCatalog, Usage, ask
from ultrai_documents.models import utcnow
from ultrai_documents.repository import DocumentsRepository
from ultrai_documents.settings import DocumentsSettings

log = logging.getLogger("ultrai_documents.analyses")

# One model's answer (or the synthesis) as the result stores it: model, status, text, error,
# prompt_tokens, completion_tokens, cost_usd, latency_ms.
ModelResult = dict[str, Any]
_PUBLIC = ("model", "status", "error", "latency_ms", "prompt_tokens", "completion_tokens", "cost_usd")


@dataclass
class _Job:
    """What a claimed analysis runs on."""

    analysis_id: str
    document_id: str
    owner: str
    key_id: str | None  # the API key it was started with: its llm calls are the key's
    params: dict[str, Any]
    token_count: int
    chunk_count: int


class Analyst:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        llm: ServiceClient,
        settings: DocumentsSettings,
        models: ModelCatalog | None = None,
    ) -> None:
        self.sessions = sessions
        self.llm = llm
        self.settings = settings
        self.models = models or ModelCatalog(llm)

    async def event(self, analysis_id: str, event: str, data: dict[str, Any], **changes: Any) -> None:
        """Record an event of the analysis, with any change to its row, in one transaction."""
        async with self.sessions() as session:
            repository = DocumentsRepository(session)
            await repository.add_event(analysis_id, event, data)
            if changes:
                await repository.update_analysis(analysis_id, **changes)
            await repository.commit()

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
        job = await self._claim(analysis_id)
        if job is None:
            return
        parts, map_reduce = await self._document_parts(job)
        await self.event(
            analysis_id,
            "stage",
            {"stage": "extraction", "tokens": job.token_count, "chunks": len(parts), "map_reduce": map_reduce},
        )
        models: list[str] = job.params["models"]
        task = task_text(job.params)
        await self.event(analysis_id, "stage", {"stage": "models", "models": models}, stage="models")
        caller = Caller(job.owner, job.key_id)
        results = await asyncio.gather(*(self._model(analysis_id, caller, m, task, parts) for m in models))
        ok = [r for r in results if r["status"] == "ok"]
        synthesis = None
        if ok and job.params.get("synthesis_model"):
            synthesis = await self._synthesis(job, task, ok)
        usage = _total_usage([*results, *([synthesis] if synthesis else [])])
        if not ok:
            await self._all_failed(analysis_id, results, usage)
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

    async def _claim(self, analysis_id: str) -> _Job | None:
        """Claim the analysis (queued -> running) and read what it runs on; None when another
        process claimed it first, or it or its document is gone."""
        async with self.sessions() as session:
            repository = DocumentsRepository(session)
            if not await repository.claim_analysis(analysis_id, utcnow()):
                return None
            await repository.add_event(analysis_id, "status", {"status": "running"})
            await repository.commit()
            analysis = await repository.analysis(analysis_id)
            doc = await repository.document(analysis.document_id) if analysis is not None else None
            if analysis is None or doc is None:
                return None
            return _Job(
                analysis_id,
                doc.id,
                analysis.owner_id,
                analysis.key_id,
                analysis.params,
                doc.token_count,
                doc.chunk_count,
            )

    async def _document_parts(self, job: _Job) -> tuple[list[str], bool]:
        """The text the models read: whole, or its chunks when it is longer than the context
        budget (map-reduce). Returns (parts, map_reduce)."""
        budget = await self.context_budget(job.params["models"])
        map_reduce = job.token_count > budget and job.chunk_count > 1
        async with self.sessions() as session:
            repository = DocumentsRepository(session)
            if map_reduce:
                return await repository.chunk_texts(job.document_id), True
            return [await repository.full_text(job.document_id)], False

    async def _all_failed(self, analysis_id: str, results: list[ModelResult], usage: dict[str, Any]) -> None:
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

    async def _model(self, analysis_id: str, caller: Caller, model: str, task: str, parts: list[str]) -> ModelResult:
        """One model's answer for the whole document (through map-reduce when in parts)."""
        started = time.perf_counter()
        usage = Usage()
        try:
            if len(parts) == 1:
                text = await self._ask(caller, model, task, [parts[0]], usage)
            else:
                notes = await self._map(caller, model, task, parts, usage)
                await self.event(analysis_id, "progress", {"model": model, "stage": "map", "parts": len(parts)})
                text = await self._reduce(caller, model, task, notes, usage)
            result: ModelResult = {"model": model, "status": "ok", "text": text, "error": None}
        except LLMError as exc:
            result = {"model": model, "status": "error", "text": None, "error": str(exc)}
        result.update(usage.as_dict())
        result["cost_usd"] = round(result["cost_usd"], 8)
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        await self.event(analysis_id, "model", _public(result))
        return result

    async def context_budget(self, models: list[str]) -> int:
        """Tokens of document one request may carry: ANALYSIS_CONTEXT_TOKENS, or half the smallest
        context window among the models when the llm service reports a smaller one (the rest is
        left for the instructions and the answer)."""
        budget = self.settings.analysis_context_tokens
        windows = await self.models.context_windows()
        known = [windows[m] for m in models if windows.get(m)]
        if known:
            budget = min(budget, max(min(known) // 2, 100))
        return budget

    async def _map(self, caller: Caller, model: str, task: str, parts: list[str], usage: Usage) -> list[str]:
        """Notes on each part, ANALYSIS_CONCURRENCY parts at a time."""
        slots = asyncio.Semaphore(self.settings.analysis_concurrency)

        async def one(index: int, part: str) -> str:
            async with slots:
                return await self._ask(caller, model, part_prompt(task, index, len(parts)), [part], usage)

        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(parts))))

    async def _reduce(self, caller: Caller, model: str, task: str, notes: list[str], usage: Usage) -> str:
        """The notes combined into one answer, in rounds of groups that fit the context budget."""
        budget = self.settings.analysis_context_tokens
        while True:
            groups: list[list[str]] = [[]]
            size = 0
            for note in notes:
                tokens = estimate_tokens(note)
                if groups[-1] and size + tokens > budget:
                    groups.append([])
                    size = 0
                groups[-1].append(note)
                size += tokens
            prompt = notes_prompt(task)
            combined = [
                await self._ask(caller, model, prompt, [f"[Part {i + 1}]\n{n}" for i, n in enumerate(g)], usage)
                for g in groups
            ]
            if len(combined) == 1:
                return combined[0]
            notes = combined

    async def _synthesis(self, job: _Job, task: str, answers: list[ModelResult]) -> ModelResult:
        """The synthesis model's combination of the answers that succeeded, reported as an event."""
        model: str = job.params["synthesis_model"]
        await self.event(job.analysis_id, "stage", {"stage": "synthesis", "model": model}, stage="synthesis")
        started = time.perf_counter()
        usage = Usage()
        context = [f"[Answer from {a['model']}]\n{a['text']}" for a in answers]
        try:
            text = await self._ask(Caller(job.owner, job.key_id), model, synthesis_prompt(task), context, usage)
            result: ModelResult = {"model": model, "status": "ok", "text": text, "error": None}
        except LLMError as exc:
            result = {"model": model, "status": "error", "text": None, "error": str(exc)}
        result.update(usage.as_dict())
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        await self.event(job.analysis_id, "synthesis", _public(result))
        return result

    async def _ask(self, caller: Caller, model: str, prompt: str, context: list[str], usage: Usage) -> str:
        return await ask(
            self.llm, caller, model, prompt, context, read_seconds=self.settings.llm_timeout_seconds, usage=usage
        )


def _public(result: ModelResult) -> dict[str, Any]:
    return {k: result.get(k) for k in _PUBLIC}


def _total_usage(results: list[ModelResult]) -> dict[str, Any]:
    return {
        "prompt_tokens": sum(r["prompt_tokens"] for r in results),
        "completion_tokens": sum(r["completion_tokens"] for r in results),
        "cost_usd": round(sum(r["cost_usd"] for r in results), 8),
    }


def _usage_columns(usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "cost_usd": usage["cost_usd"],
    }
