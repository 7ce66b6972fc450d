"""The orchestration patterns: one question to several models at once, their answers compared and
synthesised.

- ``parallel``: every model answers independently.
- ``peer_review``: then each model that answered sees the others' answers, anonymised, critiques
  them and its own, and revises (stage "review").
- ``synthesis`` (the default): then one model writes the final answer from all of them.
- ``ranked``: after the answers, each model that answered ranks the others' answers, anonymised and
  shuffled in an order of its own (stage "review", ``ultrai_llm.ranking``); the rankings are
  aggregated by Borda count, and the synthesis sees the aggregate.

With a synthesis, ``compare`` has the synthesis model also compare the answers, as JSON, in a call of
its own beside the synthesis (stage "compare", ``ultrai_llm.compare``).

With any pattern, ``rounds`` refines the answers over several rounds before the review and the
synthesis, and ``samples`` has each model answer several times (``ultrai_llm.layers``).

Models run concurrently, each with a per-model timeout inside the overall budget; a model that fails
or times out is reported with its error while the others go on. ``plan`` checks everything a request
can get wrong (and raises 4xx/503 before anything is sent or streamed); ``execute`` runs the plan,
reporting progress through ``emit`` (stage, delta and result events) when streaming. A plan can be
cancelled while it runs (``Plan.cancel``): the calls under way finish, no other starts, and the
answer says ``"status": "cancelled"``.

A plan can carry a conversation's earlier turns (``history``, ``ultrai_llm.conversations``): they
precede the question in the answer and synthesis stages' messages, the oldest dropped first when
they do not fit a model's context window.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from shared.errors import ProblemError
from ultrai_llm.compare import compare_stage
from ultrai_llm.conversations import latest_turns
from ultrai_llm.engine import CallResult, Engine, Messages
from ultrai_llm.layers import MAX_AGENTS, sample_params
from ultrai_llm.prompts import (
    COMPARE_INSTRUCTION,
    RANKED_SYNTHESIS_INSTRUCTION,
    REFINE_INSTRUCTION,
    REVIEW_INSTRUCTION,
    SYNTHESIS_INSTRUCTION,
    labelled,
    question_text,
    with_system,
)
from ultrai_llm.ranking import MAX_RANKED, distinct, rank_stage
from ultrai_llm.schemas import ModelParams, OrchestrateRequest
from ultrai_llm.settings import LlmSettings

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]
# Records a finished call's usage: (user id, endpoint, results).
Record = Callable[[str, str, list[CallResult]], None]


@dataclass
class ModelPlan:
    name: str
    params: ModelParams
    messages: Messages | None  # None: refused before the call (see ``refusal``)
    question: str = ""
    refusal: str | None = None
    sample: int | None = None  # which sample of the model, with samples above 1


@dataclass
class Plan:
    id: str
    pattern: str
    prompt: str
    context: list[str] | None
    models: list[ModelPlan]
    synthesis: ModelPlan | None
    user_id: str
    endpoint: str
    truncate: bool
    use_cache: bool
    deadline: float
    rounds: int = 1
    compare: bool = False  # the judge's comparison beside the synthesis (ultrai_llm.compare)
    # A conversation's earlier turns (user and assistant messages, oldest first) before the question.
    history: Messages = field(default_factory=list)
    stages_left: int = 1
    started: float = field(default_factory=time.perf_counter)
    # Set by ``cancel``: no call starts after it; the calls under way finish and are recorded.
    cancelled: bool = False
    # Awaited before each stage after the first; what it raises ends the run (a WebSocket checks
    # that its credential has not been revoked meanwhile).
    before_stage: Callable[[], Awaitable[None]] | None = None

    def cancel(self) -> None:
        self.cancelled = True


class Orchestrator:
    def __init__(self, engine: Engine, settings: LlmSettings, record: Record) -> None:
        self.engine = engine
        self.settings = settings
        self.record = record

    def default_models(self) -> list[str]:
        """LLM_DEFAULT_MODELS, or the first three models: real ones when there are any, else demo ones."""
        catalog = self.engine.catalog
        chosen = [m for m in self.settings.llm_default_models if m in catalog.specs]
        return chosen or (catalog.real_names() or catalog.names())[:3]

    # ---- plan: everything that can be refused is refused here -----------------------------------
    async def plan(
        self, req: OrchestrateRequest, user_id: str, endpoint: str = "orchestrate", history: Messages | None = None
    ) -> Plan:
        self.engine.require_provider()
        names = list(dict.fromkeys(req.models or self.default_models()))
        if len(names) > self.settings.llm_max_models:
            raise ProblemError(422, f"At most {self.settings.llm_max_models} models per request.")
        if req.pattern == "ranked" and len(names) > MAX_RANKED:
            raise ProblemError(422, f"At most {MAX_RANKED} models in a ranked orchestration.")
        if len(names) * req.samples > MAX_AGENTS:
            raise ProblemError(
                422, f"At most {MAX_AGENTS} answers per round: models x samples is {len(names) * req.samples}."
            )
        total_chars = len(req.prompt) + sum(len(c) for c in req.context or [])
        if total_chars > self.settings.llm_max_prompt_chars:
            raise ProblemError(413, f"The prompt and context exceed {self.settings.llm_max_prompt_chars} characters.")
        params = req.params or {}
        unknown = [m for m in params if m not in names and m != req.synthesis_model]
        if unknown:
            raise ProblemError(422, f"params name models not in the request: {', '.join(unknown)}.")
        history = history or []
        models = [await self._model_plan(name, params.get(name), req, history) for name in names]
        if req.samples > 1:
            models = [
                replace(m, params=sample_params(m.params, i), sample=i)
                for m in models
                for i in range(1, req.samples + 1)
            ]
        synthesis = None
        if req.pattern in ("synthesis", "ranked") or (req.pattern == "peer_review" and req.synthesis_model):
            name = req.synthesis_model or self.settings.llm_synthesis_model or names[0]
            spec = self.engine.spec(name)
            synthesis = ModelPlan(name, self.engine.check_params(params.get(name), spec), None)
        if req.compare and synthesis is None:
            raise ProblemError(
                422,
                "compare needs a synthesis: pattern synthesis or ranked, or peer_review with a synthesis_model.",
            )
        budget = min(req.timeout or self.settings.llm_budget_seconds, self.settings.llm_budget_seconds)
        return Plan(
            id=uuid.uuid4().hex,
            pattern=req.pattern,
            prompt=req.prompt,
            context=req.context,
            models=models,
            synthesis=synthesis,
            user_id=user_id,
            endpoint=endpoint,
            truncate=req.truncate,
            use_cache=req.cache,
            deadline=time.monotonic() + budget,
            rounds=req.rounds,
            history=history,
            compare=req.compare,
        )

    async def _model_plan(
        self, name: str, given: ModelParams | None, req: OrchestrateRequest, history: Messages
    ) -> ModelPlan:
        spec = self.engine.spec(name)
        params = self.engine.check_params(given, spec)
        question = partial(question_text, req.prompt)
        return await self._fit(name, params, question, req.context, req.truncate, history)

    async def _fit(
        self,
        name: str,
        params: ModelParams,
        content: Callable[[list[str]], str],
        context: list[str] | None,
        truncate: bool,
        history: Messages | None = None,
    ) -> ModelPlan:
        """The messages for one model, checked against its context window: a conversation's
        earlier turns (``history``) dropped oldest first until they fit; then refused when still too
        long, or (``truncate``) with context chunks dropped from the end until they fit."""
        spec = self.engine.catalog.specs[name]
        chunks = list(context or [])
        while True:
            question = content(chunks)

            def messages_with(earlier: Messages, question: str = question) -> Messages:
                return with_system(params.system_prompt, [*earlier, {"role": "user", "content": question}])

            async def needs(earlier: Messages) -> int | None:
                return await self.engine.overflow(spec, messages_with(earlier), params.max_tokens)

            earlier, needed = await latest_turns(history or [], needs)
            if needed is None:
                return ModelPlan(name, params, messages_with(earlier), question)
            if not truncate or not chunks:
                room = (spec.context_window or 0) - (params.max_tokens or 0)
                why = f"the request needs {needed} tokens but {name} has room for {room}"
                if truncate:
                    why += " even without any context"
                return ModelPlan(name, params, None, question, refusal=why)
            chunks.pop()

    # ---- execute ----------------------------------------------------------------------------------
    async def execute(self, plan: Plan, emit: Emit | None = None) -> dict[str, Any]:
        """The answer (the contract's body). Each call's usage is recorded as soon as it ends, so a
        stream the client leaves midway still counts the calls that were made.

        Each stage gets an equal share of what is left of the budget (so a model that hangs in the
        answer stage leaves time for the synthesis), and each call at most LLM_TIMEOUT of that.
        """
        later = (plan.pattern in ("peer_review", "ranked")) + (plan.synthesis is not None)
        plan.stages_left = plan.rounds + later
        answered = await self._answer_stage(plan, emit)
        results: list[CallResult] = [r for _, r in answered]
        ok = [(m, r) for m, r in answered if r.ok]
        if plan.rounds > 1:
            ok = await self._refine_rounds(plan, ok, results, emit)
            plan.stages_left = later  # rounds that did not run leave their share to the stages after
        finals = [r.text or "" for _, r in ok]
        if plan.pattern == "peer_review" and len(ok) >= 2 and not plan.cancelled:
            await self._before_stage(plan)
            reviews = await self._review_stage(plan, ok, emit)
            results.extend(reviews)
            finals = [r.text if r.ok and r.text else text for text, r in zip(finals, reviews, strict=True)]
        ranking, aggregate = None, None
        if plan.pattern == "ranked" and len(ok) >= 2 and not plan.cancelled:
            await self._before_stage(plan)
            structured = {m.name for m, _ in ok if self.engine.catalog.specs[m.name].response_schema}
            reviews, ranking, aggregate = await rank_stage(ok, partial(self._call, plan), emit, structured)
            results.extend(reviews)
        if plan.pattern in ("peer_review", "ranked"):
            plan.stages_left -= 1
        synthesis, comparison = None, None
        if plan.synthesis is not None and not plan.cancelled:
            await self._before_stage(plan)
            writing = self._synthesis_stage(plan, plan.synthesis, finals, emit, aggregate)
            if plan.compare and len(ok) >= 2:
                # The judge's comparison, concurrently with the synthesis (its calls are in the results).
                synthesis, (compared, comparison) = await asyncio.gather(
                    writing, self._compare_stage(plan, plan.synthesis, ok, finals, emit)
                )
                results.extend(compared)
            else:
                synthesis = await writing
        answer = self._answer(plan, results, synthesis)
        if plan.pattern == "ranked":
            answer["ranking"] = ranking
        if plan.compare:
            answer["comparison"] = comparison
        return answer

    @staticmethod
    async def _before_stage(plan: Plan) -> None:
        if plan.before_stage is not None:
            try:
                await plan.before_stage()
            except ProblemError:
                plan.cancel()  # no call starts after it
                raise

    async def _answer_stage(self, plan: Plan, emit: Emit | None) -> list[tuple[ModelPlan, CallResult]]:
        """Every model's answer; a 502 when none of them answered."""
        first = {"round": 1} if plan.rounds > 1 else {}
        await self._emit(emit, "stage", {"stage": "answer", **first, "models": [m.name for m in plan.models]})
        answers = await asyncio.gather(
            *(self._call(plan, m, m.messages, "answer", emit, first.get("round")) for m in plan.models)
        )
        plan.stages_left -= 1
        if not any(r.ok for r in answers) and not plan.cancelled:
            detail = "; ".join(f"{r.model}: {r.error}" for r in answers)
            raise ProblemError(
                502,
                f"Every model failed. {detail}",
                title="Every model failed",
                extra={"results": [r.public() for r in answers]},
            )
        return list(zip(plan.models, answers, strict=True))

    async def _refine_rounds(
        self, plan: Plan, ok: list[tuple[ModelPlan, CallResult]], results: list[CallResult], emit: Emit | None
    ) -> list[tuple[ModelPlan, CallResult]]:
        """Rounds 2 to ``plan.rounds``, each with the models that answered the round before (their
        results added to ``results``); the last round's good answers, or the last good ones when a
        round had none."""
        for number in range(2, plan.rounds + 1):
            if plan.cancelled:
                break
            await self._before_stage(plan)
            answered = await self._refine_stage(plan, ok, number, emit)
            plan.stages_left -= 1
            results.extend(r for _, r in answered)
            good = [(m, r) for m, r in answered if r.ok]
            if not good:
                break
            ok = good
        return ok

    async def _refine_stage(
        self, plan: Plan, ok: list[tuple[ModelPlan, CallResult]], number: int, emit: Emit | None
    ) -> list[tuple[ModelPlan, CallResult]]:
        """One refinement round: each model shown all of the last round's answers, anonymised."""
        await self._emit(emit, "stage", {"stage": "refine", "round": number, "models": [m.name for m, _ in ok]})
        answers = labelled([r.text or "" for _, r in ok], True)

        def content(ctx: list[str]) -> str:
            return REFINE_INSTRUCTION.format(question=question_text(plan.prompt, ctx), answers=answers)

        async def refine(model: ModelPlan) -> CallResult:
            fitted = await self._fit(model.name, model.params, content, plan.context, plan.truncate, plan.history)
            return await self._call(plan, replace(fitted, sample=model.sample), fitted.messages, "refine", emit, number)

        refined = await asyncio.gather(*(refine(m) for m, _ in ok))
        return [(m, r) for (m, _), r in zip(ok, refined, strict=True)]

    async def _review_stage(
        self, plan: Plan, ok: list[tuple[ModelPlan, CallResult]], emit: Emit | None
    ) -> list[CallResult]:
        await self._emit(emit, "stage", {"stage": "review", "models": [m.name for m, _ in ok]})
        return list(
            await asyncio.gather(*(self._call(plan, m, self._review_messages(m, r, ok), "review", emit) for m, r in ok))
        )

    async def _synthesis_stage(
        self, plan: Plan, writer: ModelPlan, finals: list[str], emit: Emit | None, aggregate: str | None = None
    ) -> CallResult:
        """``aggregate`` (the ranked pattern): the aggregate ranking, in the answers' numbers here."""
        await self._emit(emit, "stage", {"stage": "synthesis", "models": [writer.name]})
        answers = labelled(finals, True)

        def content(ctx: list[str]) -> str:
            question = question_text(plan.prompt, ctx)
            if aggregate is None:
                return SYNTHESIS_INSTRUCTION.format(question=question, answers=answers)
            return RANKED_SYNTHESIS_INSTRUCTION.format(question=question, answers=answers, aggregate=aggregate)

        fitted = await self._fit(writer.name, writer.params, content, plan.context, plan.truncate, plan.history)
        return await self._call(plan, fitted, fitted.messages, "synthesis", emit)

    async def _compare_stage(
        self, plan: Plan, judge: ModelPlan, ok: list[tuple[ModelPlan, CallResult]], finals: list[str], emit: Emit | None
    ) -> tuple[list[CallResult], dict[str, Any]]:
        """The judge compares the answers the synthesis sees, numbered as the synthesis numbers them."""
        answers = labelled(finals, True)

        def content(ctx: list[str]) -> str:
            return COMPARE_INSTRUCTION.format(question=question_text(plan.prompt, ctx), answers=answers)

        fitted = await self._fit(judge.name, judge.params, content, plan.context, plan.truncate, plan.history)
        structured = bool(self.engine.catalog.specs[judge.name].response_schema)
        models = distinct([m.name for m, _ in ok])
        return await compare_stage(fitted, fitted.messages, models, partial(self._call, plan), emit, structured)

    @staticmethod
    def _answer(plan: Plan, results: list[CallResult], synthesis: CallResult | None) -> dict[str, Any]:
        everything = results + ([synthesis] if synthesis else [])
        return {
            "id": plan.id,
            "pattern": plan.pattern,
            "status": "cancelled" if plan.cancelled else "completed" if all(r.ok for r in everything) else "partial",
            "results": [r.public() for r in results],
            "synthesis": synthesis.public() if synthesis else None,
            "usage": {
                "prompt_tokens": sum(r.prompt_tokens for r in everything),
                "completion_tokens": sum(r.completion_tokens for r in everything),
                "cost_usd": round(sum(0.0 if r.cached else r.cost_usd for r in everything), 8),
            },
            "latency_ms": round((time.perf_counter() - plan.started) * 1000, 2),
        }

    def _review_messages(self, me: ModelPlan, mine: CallResult, ok: list[tuple[ModelPlan, CallResult]]) -> Messages:
        others = [r.text or "" for m, r in ok if m is not me]
        return with_system(
            me.params.system_prompt,
            [
                {"role": "user", "content": me.question},
                {"role": "assistant", "content": mine.text or ""},
                {"role": "user", "content": REVIEW_INSTRUCTION.format(others=labelled(others))},
            ],
        )

    async def _call(
        self,
        plan: Plan,
        model: ModelPlan,
        messages: Messages | None,
        stage: str,
        emit: Emit | None,
        number: int | None = None,
        *,
        response_format: dict[str, Any] | None = None,
    ) -> CallResult:
        """One call of a stage (of round ``number`` when there are several rounds)."""
        labels = {k: v for k, v in (("round", number), ("sample", model.sample)) if v is not None}
        if plan.cancelled:
            result = CallResult(model.name, stage, status="error", error="cancelled before the call")
        elif messages is None:
            result = CallResult(model.name, stage, status="error", error=f"refused: {model.refusal}")
        else:
            remaining = (plan.deadline - time.monotonic()) / max(plan.stages_left, 1)
            if remaining <= 0.01:
                result = CallResult(model.name, stage, status="error", error="the time budget was spent")
            else:
                on_delta = None
                if emit is not None:

                    async def on_delta(text: str) -> None:
                        await emit("delta", {"model": model.name, "stage": stage, **labels, "text": text})

                result = await self.engine.call(
                    model.name,
                    messages,
                    model.params,
                    stage=stage,
                    scope=plan.user_id,
                    use_cache=plan.use_cache,
                    time_limit=min(self.settings.llm_timeout, remaining),
                    on_delta=on_delta,
                    response_format=response_format,
                )
                self.record(plan.user_id, plan.endpoint, [result])
        result.round, result.sample = number, model.sample
        if emit is not None:
            await emit("result", result.public())
        return result

    @staticmethod
    async def _emit(emit: Emit | None, event: str, data: dict[str, Any]) -> None:
        if emit is not None:
            await emit(event, data)
