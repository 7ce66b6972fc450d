"""The work of one analysis: several models read the document, one synthesises their answers.

Each model is asked on its own (one orchestration call per model), so its answer is reported the
moment it arrives and its failure touches no other model; the synthesis model then combines the
answers that succeeded. A document longer than the context budget is analysed chunk by chunk
(map) and each model's partial answers are combined (reduce) before the synthesis. Every step is
recorded as an event of the analysis, in the database.

Exactly once: the work claims the analysis (queued -> running) and the claim's fence (``attempt``)
guards every later write, so a delivery that lost the analysis (cancelled, or taken over after its
worker was thought dead) writes nothing more and makes no further call. Each model's answer is
kept in the analysis' row as it arrives (``partial``), so a delivery that takes over asks only the
models that had not answered, and repeats no event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.client import ServiceClient
from ultrai_documents.analysis.estimate import context_budget, document_parts
from ultrai_documents.analysis.metrics import Outcome
from ultrai_documents.analysis.notify import Notifier
from ultrai_documents.analysis.prompts import (
    answers_context,
    notes_context,
    notes_prompt,
    part_prompt,
    synthesis_prompt,
    task_text,
)
from ultrai_documents.extraction.chunking import estimate_tokens
from ultrai_documents.llm import Caller, LLMError, ModelCatalog, Usage, ask
from ultrai_documents.models import Analysis, utcnow
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
    attempt: int  # the claim's fence
    document_id: str
    owner: str
    key_id: str | None  # the API key it was started with: its llm calls are the key's
    params: dict[str, Any]
    token_count: int
    chunk_count: int
    partial: dict[str, Any] = field(default_factory=dict)  # {"models": {name: result}, "synthesis": result}
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Superseded(Exception):
    """The analysis is no longer this delivery's: cancelled, or claimed by another delivery."""


class Analyst:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        llm: ServiceClient,
        settings: DocumentsSettings,
        models: ModelCatalog | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.sessions = sessions
        self.llm = llm
        self.settings = settings
        self.models = models or ModelCatalog(llm)
        self.notifier = notifier or Notifier(settings.sse_poll_seconds)

    async def event(
        self, job: _Job, event: str, data: dict[str, Any] | None, *, once: bool = False, **changes: Any
    ) -> None:
        """Record an event of the analysis (``data`` None: none), with any change to its row, in one
        transaction, while this delivery owns the analysis (else ``Superseded``). The row is written
        first: its lock orders the events of one analysis by id as they commit, so a stream that
        read up to an id has missed none before it. ``once``: not again if the same event is
        already recorded (a delivery that took over repeats its steps, not their events)."""
        async with self.sessions() as session:
            repository = DocumentsRepository(session)
            if not await repository.fenced_update(job.analysis_id, job.attempt, heartbeat_at=utcnow(), **changes):
                await repository.rollback()
                raise Superseded(job.analysis_id)
            if data is not None and not (once and data in await repository.event_data(job.analysis_id, event)):
                await repository.add_event(job.analysis_id, event, data)
            await repository.commit()
        await self.notifier.publish(job.analysis_id)

    async def run(self, analysis_id: str, *, takeover: bool = False) -> Outcome:
        """Run the analysis if this delivery claims it, and say how the delivery ended. ``takeover``:
        the queue redelivers it after the worker running it stopped beating; a running analysis is
        then claimed too."""
        job: _Job | None = None
        try:
            job = await self._claim(analysis_id, takeover)
            if job is None:
                return "skipped"
            return await self._run(job)
        except asyncio.CancelledError:
            raise
        except Superseded:
            log.info("analysis %s: no longer this delivery's (cancelled or taken over)", analysis_id)
            return "superseded"
        except Exception as exc:
            log.exception("analysis %s failed", analysis_id)
            if job is None:
                return "failed"
            try:
                await self.event(
                    job,
                    "failed",
                    {"status": "failed", "error": "The analysis failed on our side."},
                    status="failed",
                    error=f"internal error ({type(exc).__name__})",
                    finished_at=utcnow(),
                )
            except Superseded:
                return "superseded"
            except Exception:
                log.exception("could not record the failure of analysis %s", analysis_id)
            return "failed"

    async def _run(self, job: _Job) -> Outcome:
        started = time.perf_counter()
        parts, map_reduce = await self._document_parts(job)
        await self.event(
            job,
            "stage",
            {"stage": "extraction", "tokens": job.token_count, "chunks": len(parts), "map_reduce": map_reduce},
            once=True,
        )
        models: list[str] = job.params["models"]
        task = task_text(job.params)
        await self.event(job, "stage", {"stage": "models", "models": models}, once=True, stage="models")
        caller = Caller(job.owner, job.key_id)
        results = await asyncio.gather(*(self._model(job, caller, m, task, parts) for m in models))
        ok = [r for r in results if r["status"] == "ok"]
        synthesis = None
        if ok and job.params.get("synthesis_model"):
            synthesis = await self._synthesis(job, task, ok)
        usage = _total_usage([*results, *([synthesis] if synthesis else [])])
        if not ok:
            await self._all_failed(job, results, usage)
            return "failed"
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
            job,
            "completed",
            {"status": "completed", "failed_models": [r["model"] for r in results if r["status"] != "ok"]},
            status="completed",
            stage=None,
            result=result,
            finished_at=utcnow(),
            partial=None,
            **_usage_columns(usage),
        )
        return "completed"

    async def _claim(self, analysis_id: str, takeover: bool) -> _Job | None:
        """Claim the analysis (queued -> running; with ``takeover`` running too) and read what it
        runs on; None when it is not there to claim (another delivery has it, it ended, it or its
        document is gone)."""
        async with self.sessions() as session:
            repository = DocumentsRepository(session)
            attempt = await repository.claim_analysis(analysis_id, utcnow(), takeover=takeover)
            if attempt is None:
                await repository.rollback()
                return None
            running = {"status": "running"}
            if running not in await repository.event_data(analysis_id, "status"):
                await repository.add_event(analysis_id, "status", running)
            await repository.commit()
            analysis = await repository.analysis(analysis_id)
            doc = await repository.document(analysis.document_id) if analysis is not None else None
            if analysis is None or doc is None:
                return None
            if attempt > 1:
                log.info("analysis %s: claimed again (claim %d)", analysis_id, attempt)
        await self.notifier.publish(analysis_id)
        return _Job(
            analysis_id,
            attempt,
            doc.id,
            analysis.owner_id,
            analysis.key_id,
            analysis.params,
            doc.token_count,
            doc.chunk_count,
            partial=dict(analysis.partial or {}),
        )

    async def _guard(self, job: _Job) -> None:
        """Before a call: is the analysis still this delivery's? (A cancelled one makes no more.)"""
        async with self.sessions() as session:
            if not await DocumentsRepository(session).owns(job.analysis_id, job.attempt):
                raise Superseded(job.analysis_id)

    async def _answered(self, job: _Job, kind: str, result: ModelResult, event: str) -> None:
        """A model's (or the synthesis') answer: kept in the row with its usage, and its event."""
        async with job.lock:
            partial = dict(job.partial)
            if kind == "models":
                partial["models"] = {**partial.get("models", {}), result["model"]: result}
            else:
                partial[kind] = result
            try:
                await self.event(
                    job,
                    event,
                    _public(result),
                    partial=partial,
                    prompt_tokens=Analysis.prompt_tokens + result["prompt_tokens"],
                    completion_tokens=Analysis.completion_tokens + result["completion_tokens"],
                    cost_usd=Analysis.cost_usd + result["cost_usd"],
                )
            except Superseded:
                # Cancelled meanwhile: no event, but what the answer cost is recorded.
                async with self.sessions() as session:
                    repository = DocumentsRepository(session)
                    await repository.add_spent(
                        job.analysis_id,
                        job.attempt,
                        result["prompt_tokens"],
                        result["completion_tokens"],
                        result["cost_usd"],
                    )
                    await repository.commit()
                raise
            job.partial = partial

    async def _document_parts(self, job: _Job) -> tuple[list[str], bool]:
        """The text the models read: whole, or its chunks when it is longer than the context
        budget (map-reduce). Returns (parts, map_reduce)."""
        budget = await self.context_budget(job.params["models"])
        async with self.sessions() as session:
            return await document_parts(
                DocumentsRepository(session), job.document_id, job.token_count, job.chunk_count, budget
            )

    async def _all_failed(self, job: _Job, results: list[ModelResult], usage: dict[str, Any]) -> None:
        errors = "; ".join(f"{r['model']}: {r['error']}" for r in results)
        await self.event(
            job,
            "failed",
            {"status": "failed", "error": "Every model failed.", "results": [_public(r) for r in results]},
            status="failed",
            stage=None,
            error=f"Every model failed ({errors})"[:2000],
            result={"models": results, "synthesis": None, "answer": None, "usage": usage},
            finished_at=utcnow(),
            partial=None,
            **_usage_columns(usage),
        )

    async def _model(self, job: _Job, caller: Caller, model: str, task: str, parts: list[str]) -> ModelResult:
        """One model's answer for the whole document (through map-reduce when in parts); the
        answer an earlier delivery received, when there is one."""
        earlier: ModelResult | None = job.partial.get("models", {}).get(model)
        if earlier is not None:
            return earlier
        started = time.perf_counter()
        usage = Usage()
        try:
            if len(parts) == 1:
                text = await self._ask(job, caller, model, task, [parts[0]], usage)
            else:
                notes = await self._map(job, caller, model, task, parts, usage)
                await self.event(job, "progress", {"model": model, "stage": "map", "parts": len(parts)}, once=True)
                text = await self._reduce(job, caller, model, task, notes, usage)
            result: ModelResult = {"model": model, "status": "ok", "text": text, "error": None}
        except LLMError as exc:
            result = {"model": model, "status": "error", "text": None, "error": str(exc)}
        result.update(usage.as_dict())
        result["cost_usd"] = round(result["cost_usd"], 8)
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        await self._answered(job, "models", result, "model")
        return result

    async def context_budget(self, models: list[str]) -> int:
        """Tokens of document one request may carry (``estimate.context_budget``)."""
        return await context_budget(self.settings, self.models, models)

    async def _map(self, job: _Job, caller: Caller, model: str, task: str, parts: list[str], usage: Usage) -> list[str]:
        """Notes on each part, ANALYSIS_CONCURRENCY parts at a time."""
        slots = asyncio.Semaphore(self.settings.analysis_concurrency)

        async def one(index: int, part: str) -> str:
            async with slots:
                return await self._ask(job, caller, model, part_prompt(task, index, len(parts)), [part], usage)

        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(parts))))

    async def _reduce(self, job: _Job, caller: Caller, model: str, task: str, notes: list[str], usage: Usage) -> str:
        """The notes combined into one answer, in rounds of groups that fit the context budget (two at a
        time when no two fit together, so that every round leaves fewer)."""
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
            carried: list[str] = []
            if len(groups) == len(notes) > 1:
                # Notes each longer than half the budget would be combined one by one, round after
                # round, never fewer (while the model keeps writing that much). Two at a time, over
                # the budget (the model's window is the hard limit: the provider refuses what does
                # not fit), they halve each round; an odd one out waits for the next round as it is.
                groups = [notes[i : i + 2] for i in range(0, len(notes), 2)]
                if len(groups[-1]) == 1:
                    carried = groups.pop()
            prompt = notes_prompt(task)
            combined = [await self._ask(job, caller, model, prompt, notes_context(g), usage) for g in groups]
            combined += carried
            if len(combined) == 1:
                return combined[0]
            notes = combined

    async def _synthesis(self, job: _Job, task: str, answers: list[ModelResult]) -> ModelResult:
        """The synthesis model's combination of the answers that succeeded, reported as an event."""
        model: str = job.params["synthesis_model"]
        earlier: ModelResult | None = job.partial.get("synthesis")
        if earlier is not None:
            return earlier
        await self.event(job, "stage", {"stage": "synthesis", "model": model}, once=True, stage="synthesis")
        started = time.perf_counter()
        usage = Usage()
        context = answers_context([(a["model"], a["text"]) for a in answers])
        try:
            text = await self._ask(job, Caller(job.owner, job.key_id), model, synthesis_prompt(task), context, usage)
            result: ModelResult = {"model": model, "status": "ok", "text": text, "error": None}
        except LLMError as exc:
            result = {"model": model, "status": "error", "text": None, "error": str(exc)}
        result.update(usage.as_dict())
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        await self._answered(job, "synthesis", result, "synthesis")
        return result

    async def _ask(self, job: _Job, caller: Caller, model: str, prompt: str, context: list[str], usage: Usage) -> str:
        await self._guard(job)
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
