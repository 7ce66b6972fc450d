"""What an analysis will cost before any call: ``POST .../analyses/estimate`` answers it, and an
analysis is refused at start (402) when its estimate does not fit in what is left of the budget.

An analysis makes several orchestrations (one per model and step, see ``analyst``); the estimate
builds exactly the orchestrate requests the analysis would send (``orchestrate_body``, the same
prompts, the document's text or chunks as the analysis reads them) and asks the llm service's
``/orchestrate/estimate`` for each, as the user (and the API key) the analysis' calls are made for.
No provider is called. The answer is their sum:

- ``answer``: a document within the context budget, one orchestration per model over its text.
- ``map``: a longer one, one per chunk and model; ``reduce``: one per model over the notes of its
  chunks (a further round only when the notes do not fit the context budget together: not
  counted). The notes do not exist yet: the request is counted with them empty (``low``), and
  ``high`` adds each note at its output estimate, priced at the model's input price.
- ``synthesis``: with a synthesis model, one over the models' answers, counted the same way.

The budget is the llm service's (what is left today of the user's and the key's); the analysis fits
when the sum's high end fits in it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httpx

from shared.client import ServiceClient
from shared.errors import ProblemError
from ultrai_documents.analysis.prompts import (
    answers_context,
    notes_context,
    notes_prompt,
    part_prompt,
    synthesis_prompt,
    task_text,
)
from ultrai_documents.llm import ESTIMATE_PATH, Caller, ModelCatalog, orchestrate_body, problem_detail
from ultrai_documents.models import Document
from ultrai_documents.repository import DocumentsRepository
from ultrai_documents.settings import DocumentsSettings

log = logging.getLogger("ultrai_documents.estimate")

# The llm service's answers passed on as they are (the request is the user's to change).
PASSED_ON = (400, 402, 413, 422)
# Estimate requests in flight at once for one analysis (a long document asks one per chunk and model).
CONCURRENCY = 8


async def context_budget(settings: DocumentsSettings, catalog: ModelCatalog, models: list[str]) -> int:
    """Tokens of document one request may carry: ANALYSIS_CONTEXT_TOKENS, or half the smallest
    context window among the models when the llm service reports a smaller one (the rest is left
    for the instructions and the answer)."""
    budget = settings.analysis_context_tokens
    windows = await catalog.context_windows()
    known = [windows[m] for m in models if windows.get(m)]
    if known:
        budget = min(budget, max(min(known) // 2, 100))
    return budget


async def document_parts(
    repository: DocumentsRepository, document_id: str, token_count: int, chunk_count: int, budget: int
) -> tuple[list[str], bool]:
    """The text the models read: whole, or its chunks when it is longer than the context budget
    (map-reduce). Returns (parts, map_reduce)."""
    if token_count > budget and chunk_count > 1:
        return await repository.chunk_texts(document_id), True
    return [await repository.full_text(document_id)], False


@dataclass
class _Step:
    """One orchestration the analysis would make; ``earlier``: the output estimates of the calls
    whose answers its context will hold (counted empty in the request)."""

    step: str
    model: str
    body: dict[str, Any]
    earlier: list[_Step]
    answer: dict[str, Any] | None = None

    @property
    def output(self) -> int:
        assert self.answer is not None
        return sum(int(c["output_tokens"]) for c in self.answer["calls"])

    def extra_input(self) -> int:
        return sum(s.output for s in self.earlier)


def plan_steps(params: dict[str, Any], parts: list[str], map_reduce: bool) -> list[_Step]:
    """The orchestrations of the analysis, in the order it makes them (see ``analyst``)."""
    models: list[str] = params["models"]
    task = task_text(params)
    steps: list[_Step] = []
    finals: list[_Step] = []
    for model in models:
        if not map_reduce:
            final = _Step("answer", model, orchestrate_body(model, task, [parts[0]]), [])
            steps.append(final)
        else:
            maps = [
                _Step("map", model, orchestrate_body(model, part_prompt(task, i, len(parts)), [p]), [])
                for i, p in enumerate(parts)
            ]
            notes = notes_context([""] * len(maps))
            final = _Step("reduce", model, orchestrate_body(model, notes_prompt(task), notes), maps)
            steps.extend([*maps, final])
        finals.append(final)
    synthesis: str | None = params.get("synthesis_model")
    if synthesis:
        context = answers_context([(m, "") for m in models])
        body = orchestrate_body(synthesis, synthesis_prompt(task), context)
        steps.append(_Step("synthesis", synthesis, body, finals))
    return steps


async def _ask_estimate(client: ServiceClient, caller: Caller, step: _Step) -> None:
    try:
        resp = await client.post(ESTIMATE_PATH, json=step.body, headers=caller.headers(), timeout=30.0)
    except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: no service token
        log.warning("llm estimate unreachable: %s", type(exc).__name__)
        raise ProblemError(503, "The llm service cannot be reached to estimate the analysis; try again.") from None
    if resp.status_code in PASSED_ON:
        raise _passed_on(resp)
    if resp.status_code != 200:
        raise ProblemError(503, f"The llm service could not estimate the analysis ({problem_detail(resp)}).")
    try:
        answer = resp.json()
        if not isinstance(answer["calls"], list) or not isinstance(answer["budget"], dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ProblemError(503, "The llm service answered the estimate with an unreadable body.") from None
    step.answer = answer


def _passed_on(resp: httpx.Response) -> ProblemError:
    """The llm service's problem, as it said it (its detail, title and extra fields)."""
    try:
        body = resp.json()
        problem = dict(body) if isinstance(body, dict) else {}
    except ValueError:
        problem = {}
    detail = problem.pop("detail", None)
    title = problem.pop("title", None)
    for name in ("type", "status", "request_id", "instance"):
        problem.pop(name, None)
    return ProblemError(
        resp.status_code,
        str(detail) if detail else f"The llm service refused the estimate ({resp.status_code}).",
        title=str(title) if title else HTTPStatus(resp.status_code).phrase,
        extra=problem,
    )


def _input_price(call: dict[str, Any]) -> float:
    """The model's price per input token, as its estimate priced the call (costs are linear)."""
    tokens = int(call["input_tokens"])
    return float(call["cost_usd_low"]) / tokens if tokens else 0.0


def _wall_time(steps: list[_Step], concurrency: int) -> float | None:
    """The models side by side (each one's map steps ``concurrency`` at a time, then its reduce),
    then the synthesis; None when the llm service has no recent latency for a planned model."""
    per_model: dict[str, float] = {}
    synthesis = 0.0
    for kind in ("answer", "map", "reduce", "synthesis"):
        for step in (s for s in steps if s.step == kind):
            assert step.answer is not None
            ms = step.answer.get("wall_time_ms")
            if ms is None and step.answer["calls"]:
                return None
            ms = float(ms or 0.0)
            if kind == "synthesis":
                synthesis = ms
            elif kind == "map":
                maps = sum(1 for s in steps if s.step == "map" and s.model == step.model)
                rounds = math.ceil(maps / concurrency)
                per_model[step.model] = max(per_model.get(step.model, 0.0), ms * rounds)
            else:
                per_model[step.model] = per_model.get(step.model, 0.0) + ms
    return round(max(per_model.values(), default=0.0) + synthesis, 2)


def _up(usd: float) -> float:
    """Rounded up to a millionth of a dollar: an amount over budget never reads as 0."""
    return math.ceil(usd * 1_000_000) / 1_000_000


async def estimate_analysis(
    repository: DocumentsRepository,
    settings: DocumentsSettings,
    catalog: ModelCatalog,
    caller: Caller,
    doc: Document,
    params: dict[str, Any],
    *,
    budget_check: bool = False,
    deadline: float | None = None,
) -> dict[str, Any] | None:
    """The estimate of the analysis ``params`` of ``doc`` for ``caller`` (the ``AnalysisEstimate``
    schema). The request's database session is released before the llm service is asked.
    ``budget_check``: None as soon as the first answer says no budget in USD applies (nothing to
    check against, so no more to ask). ``deadline`` (the event loop's time): the llm service is
    waited for until then (TimeoutError past it); the database reads are not cut short."""
    async with asyncio.timeout_at(deadline):
        budget_tokens = await context_budget(settings, catalog, params["models"])
    parts, map_reduce = await document_parts(repository, doc.id, doc.token_count, doc.chunk_count, budget_tokens)
    await repository.release()
    steps = plan_steps(params, parts, map_reduce)
    async with asyncio.timeout_at(deadline):
        if not await _ask_all(catalog, caller, steps, budget_check):
            return None
    return _total(steps, params, map_reduce, len(parts), settings.analysis_concurrency)


async def _ask_all(catalog: ModelCatalog, caller: Caller, steps: list[_Step], budget_check: bool) -> bool:
    """Each step's estimate from the llm service; False (and no more asked) when ``budget_check``
    and no budget in USD applies."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def ask(step: _Step) -> None:
        async with slots:
            await _ask_estimate(catalog.llm, caller, step)

    await ask(steps[0])
    assert steps[0].answer is not None
    if budget_check and steps[0].answer["budget"].get("remaining_usd") is None:
        return False
    # The steps without earlier answers first: the others' high end needs their output estimates.
    await asyncio.gather(*(ask(s) for s in steps[1:] if not s.earlier))
    await asyncio.gather(*(ask(s) for s in steps if s.earlier))
    return True


def _total(
    steps: list[_Step], params: dict[str, Any], map_reduce: bool, parts: int, concurrency: int
) -> dict[str, Any]:
    calls = in_low = in_high = out = 0
    low = high = 0.0
    per_step: dict[str, int] = {}
    refused: dict[str, str] = {}
    for step in steps:
        answer = step.answer
        assert answer is not None
        per_step[step.step] = per_step.get(step.step, 0) + 1
        refused.update(answer.get("refused") or {})
        extra = step.extra_input()
        for call in answer["calls"]:
            calls += 1
            in_low += int(call["input_tokens"])
            in_high += int(call["input_tokens_max"]) + extra
            out += int(call["output_tokens"])
            low += float(call["cost_usd_low"])
            high += float(call["cost_usd_high"]) + extra * _input_price(call)
    budget = dict(steps[0].answer["budget"]) if steps and steps[0].answer else {}
    remaining = budget.get("remaining_usd")
    over = high - remaining if remaining is not None and high > remaining else None
    budget["fits"] = over is None
    budget["over_by_usd"] = _up(over) if over is not None else None
    left_tokens = budget.get("remaining_tokens")
    budget["fits_tokens"] = left_tokens is None or in_high + out <= left_tokens
    return {
        "models": params["models"],
        "synthesis_model": params.get("synthesis_model"),
        "map_reduce": {"chunks": parts} if map_reduce else None,
        "orchestrations": len(steps),
        "orchestrations_per_step": per_step,
        "calls": calls,
        "refused": refused,
        "input_tokens": {"low": in_low, "high": in_high},
        "output_tokens": out,
        "cost_usd": {"low": round(low, 10), "high": round(high, 10)},
        "wall_time_ms": _wall_time(steps, concurrency),
        "budget": budget,
    }


def over_budget(estimate: dict[str, Any]) -> ProblemError:
    """The 402 of an analysis whose estimate does not fit in what is left of the budget."""
    budget = estimate["budget"]
    high, left, over = estimate["cost_usd"]["high"], budget["remaining_usd"], budget["over_by_usd"]
    detail = (
        f"This analysis may cost up to ${high:.6f} (estimated: {estimate['orchestrations']} orchestrations, "
        f"{estimate['calls']} calls), but ${left:.6f} of today's budget is left: ${over:.6f} over. Use fewer "
        "models, or wait until 00:00 UTC."
    )
    return ProblemError(
        402,
        detail,
        title="Over budget",
        extra={"estimated_cost_usd": high, "remaining_usd": left, "over_by_usd": over},
    )
