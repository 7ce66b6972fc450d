"""What an orchestration will cost before any call: ``POST /api/v1/llm/orchestrate/estimate`` answers
it, and every orchestration (HTTP, the ``ultrai/*`` virtual models, the WebSocket) is refused with
402 before its first call when the estimate's high end does not fit in what is left of the budget.

The estimate is made from the plan (``Orchestrator.plan``: what orchestrate refuses, the estimate
refuses), without any provider call:

- Planned calls: the answer stage (every model not refused for length), then ``review`` (peer_review
  and ranked: every answering model, when at least two answer) and ``synthesis`` (one call); with
  ``compare`` (and at least two answering models) the judge's ``compare`` call beside the synthesis,
  and its possible repair (``ultrai_llm.compare``: one more call when the reply is not valid JSON of
  the schema). The repair is planned as ``optional``: it counts in the high end only (its low cost
  and low input are 0), it is left out of ``calls_per_stage`` and of the wall time, and its input
  at its longest holds the first reply at its output estimate, the schema and ``REPAIR_ERROR_TOKENS``
  for the validation error.
- Input tokens: litellm's token counter for the model (``litellm.token_counter``) over the messages
  the stage will send. Those of the answer stage are exact. A later stage's messages hold earlier
  answers that do not exist yet: ``input_tokens`` counts them empty, ``input_tokens_max`` adds each
  earlier answer at its output estimate.
- Output tokens: the call's ``max_tokens``; without it the model's output limit from the catalog
  capped at ``OUTPUT_CAP`` (an answer rarely comes near a model's limit, and the limit of some is
  above 100k), or ``DEFAULT_OUTPUT_TOKENS`` when the catalog knows no limit. Set ``max_tokens`` for
  a high end that holds.
- Cost: the catalog's prices per token (the models file's ``model_info``, else litellm's bundled
  cost map, as ``litellm.cost_per_token`` reads it; what the engine charges when litellm reports no
  cost). Low: the inputs without earlier answers and no output; high: ``input_tokens_max`` and every
  call writing its output estimate.
- Wall time: stage by stage the slowest of its models' recent median latency (the engine keeps the
  last calls' latencies per model); null when a planned model has made no call lately.
- Budget: what is left today of the user's daily budget (LLM_BUDGET_USD_PER_DAY) and of the API
  key's (its ``budget_usd``), the tighter of both; the tokens left of LLM_BUDGET_TOKENS_PER_DAY are
  reported beside (that allowance is enforced as spent, 429, not estimated).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from shared.apikeys import current_key
from shared.errors import ProblemError
from ultrai_llm.catalog import ModelSpec
from ultrai_llm.compare import answer_labels, draft_schema
from ultrai_llm.engine import Engine, Messages
from ultrai_llm.engine_setup import litellm
from ultrai_llm.orchestrate import ModelPlan, Plan
from ultrai_llm.prompts import (
    COMPARE_INSTRUCTION,
    COMPARE_REPAIR_INSTRUCTION,
    RANKED_SYNTHESIS_INSTRUCTION,
    RANKING_INSTRUCTION,
    REFINE_INSTRUCTION,
    REVIEW_INSTRUCTION,
    SYNTHESIS_INSTRUCTION,
    labelled,
    labelled_responses,
    question_text,
    with_system,
)
from ultrai_llm.ranking import aggregate_text, labels_for
from ultrai_llm.service import Llm
from ultrai_llm.usage import UsageStore, start_of_day

log = logging.getLogger("ultrai_llm.estimate")

OUTPUT_CAP = 4096  # the output estimate of a call without max_tokens, at most
DEFAULT_OUTPUT_TOKENS = 1024  # ... and when the model's output limit is unknown
# Token counts remembered (least recently used dropped), by litellm model and a digest of the messages.
COUNTS_KEPT = 4096
_COUNTS: OrderedDict[tuple[str, bytes], int] = OrderedDict()
_COUNTS_LOCK = threading.Lock()
# Above this many characters the token counting runs in a worker thread (it would hold the loop).
INLINE_CHARS = 50_000
# The compare repair's allowance for the validation error it quotes (at most a few short messages).
REPAIR_ERROR_TOKENS = 200


def output_estimate(model: ModelPlan, spec: ModelSpec) -> int:
    if model.params.max_tokens is not None:
        return model.params.max_tokens
    if spec.max_output_tokens:
        return min(spec.max_output_tokens, OUTPUT_CAP)
    return DEFAULT_OUTPUT_TOKENS


def count_tokens(spec: ModelSpec, messages: Messages) -> int:
    """litellm's count for the model, remembered for the same model and messages (an estimate
    followed by its orchestration, or models behind the same litellm model, count once); a content
    it cannot count, a character per token (never fewer tokens than that for text)."""
    digest = hashlib.blake2b(json.dumps(messages, sort_keys=True).encode(), digest_size=16).digest()
    return _count(spec.litellm_model, digest, messages)


def _count(model: str, digest: bytes, messages: Messages) -> int:
    key = (model, digest)
    with _COUNTS_LOCK:  # a large estimate counts in a worker thread
        if (known := _COUNTS.get(key)) is not None:
            _COUNTS.move_to_end(key)
            return known
    try:
        counted = int(litellm.token_counter(model=model, messages=messages))
    except Exception as exc:
        log.warning("token count failed for %s: %s", model, type(exc).__name__)
        return sum(len(str(m.get("content") or "")) for m in messages)
    with _COUNTS_LOCK:
        _COUNTS[key] = counted
        if len(_COUNTS) > COUNTS_KEPT:
            _COUNTS.popitem(last=False)
    return counted


class _Calls:
    """The planned calls, stage by stage, as dicts of the ``PlannedCall`` schema."""

    def __init__(self, engine: Engine, plan: Plan) -> None:
        self.specs = engine.catalog.specs
        self.plan = plan
        self.calls: list[dict[str, Any]] = []

    def add(
        self,
        stage: str,
        model: ModelPlan,
        messages: Messages,
        earlier: int,
        longest: Messages | None = None,
        number: int | None = None,
        optional: bool = False,
    ) -> int:
        """One call (of refinement round ``number``); ``earlier``: the output estimates of the
        earlier answers its messages hold; ``longest``: the messages at their longest when more
        than the answers varies; ``optional``: made only if needed (its low end is 0). Returns its
        output estimate."""
        spec = self.specs[model.name]
        low = count_tokens(spec, messages)
        high = (low if longest is None else count_tokens(spec, longest)) + earlier
        out = output_estimate(model, spec)
        call: dict[str, Any] = {
            "stage": stage,
            "model": model.name,
            "input_tokens": low,
            "input_tokens_max": high,
            "output_tokens": out,
            "cost_usd_low": spec.cost(low, 0),
            "cost_usd_high": spec.cost(high, out),
            "optional": optional,
        }
        if number is not None:
            call["round"] = number
        if optional:
            call.update(input_tokens=0, cost_usd_low=0.0)
        self.calls.append(call)
        return out

    def build(self) -> list[dict[str, Any]]:
        plan = self.plan
        answering = [m for m in plan.models if m.messages is not None]
        # The output estimate of each answering model's (each sample's) latest answer, in order.
        outputs = [self.add("answer", m, m.messages, 0) for m in answering if m.messages is not None]
        question = question_text(plan.prompt, plan.context)
        for number in range(2, plan.rounds + 1):
            # Every model that answered is shown all of the last round's answers (as many as answered).
            shown = labelled([""] * len(answering), True)
            content = REFINE_INSTRUCTION.format(question=question, answers=shown)
            earlier = sum(outputs)
            outputs = [
                self.add(
                    "refine",
                    m,
                    with_system(m.params.system_prompt, [*plan.history, {"role": "user", "content": content}]),
                    earlier,
                    number=number,
                )
                for m in answering
            ]
        finals = list(outputs)
        if plan.pattern == "peer_review" and len(answering) >= 2:
            empty = labelled([""] * (len(answering) - 1))
            for i, m in enumerate(answering):
                turns = [
                    {"role": "user", "content": m.question},
                    {"role": "assistant", "content": ""},
                    {"role": "user", "content": REVIEW_INSTRUCTION.format(others=empty)},
                ]
                finals[i] = self.add("review", m, with_system(m.params.system_prompt, turns), sum(outputs))
        if plan.pattern == "ranked" and len(answering) >= 2:
            labels = labels_for(len(answering) - 1)
            for i, m in enumerate(answering):
                content = RANKING_INSTRUCTION.format(
                    question=m.question, responses=labelled_responses([""] * len(labels)), example=", ".join(labels[:2])
                )
                others = sum(outputs) - outputs[i]
                self.add(
                    "review", m, with_system(m.params.system_prompt, [{"role": "user", "content": content}]), others
                )
        if plan.synthesis is not None and finals:
            models = [m.name for m in answering]
            ranked = plan.pattern == "ranked" and len(models) >= 2
            self.add(
                "synthesis",
                plan.synthesis,
                self._synthesis_messages(models, ranked, scored=False),
                sum(finals),
                self._synthesis_messages(models, ranked, scored=True) if ranked else None,
            )
            if plan.compare and len(models) >= 2:
                self._compare(len(models), sum(finals))
        return self.calls

    def _compare(self, answers: int, earlier: int) -> None:
        """The judge's comparison of the answers, and its possible repair (optional: the first
        reply at its output estimate, quoted with the schema and an allowance for the error)."""
        plan = self.plan
        judge = plan.synthesis
        assert judge is not None
        content = COMPARE_INSTRUCTION.format(
            question=question_text(plan.prompt, plan.context), answers=labelled([""] * answers, True)
        )
        messages = with_system(judge.params.system_prompt, [*plan.history, {"role": "user", "content": content}])
        reply = self.add("compare", judge, messages, earlier)
        schema = json.dumps(draft_schema(answer_labels(answers)))
        repair = COMPARE_REPAIR_INSTRUCTION.format(reply="", error="", schema=schema)
        messages = with_system(judge.params.system_prompt, [{"role": "user", "content": repair}])
        self.add("compare", judge, messages, reply + REPAIR_ERROR_TOKENS, optional=True)

    def _synthesis_messages(self, models: list[str], ranked: bool, scored: bool) -> Messages:
        """The synthesis with empty answers; ranked: the aggregate's lines at their shortest (no
        answer ranked) or ``scored`` (every answer ranked, a score with decimals written out)."""
        plan = self.plan
        assert plan.synthesis is not None
        question = question_text(plan.prompt, plan.context)
        answers = labelled([""] * len(models), True)
        if ranked:
            n = len(models) - 1
            rows = [
                {"model": m, "rank": i, "score": (n - 1) / 3 + 0.0001 if scored else None, "ballots": n}
                for i, m in enumerate(models, 1)
            ]
            aggregate = aggregate_text(rows, {m: i for i, m in enumerate(models, 1)})
            content = RANKED_SYNTHESIS_INSTRUCTION.format(question=question, answers=answers, aggregate=aggregate)
        else:
            content = SYNTHESIS_INSTRUCTION.format(question=question, answers=answers)
        # A conversation's earlier turns precede it, as in the answer stage's messages (all of them: the high side).
        messages = [*plan.history, {"role": "user", "content": content}]
        return with_system(plan.synthesis.params.system_prompt, messages)


def wall_time(engine: Engine, calls: list[dict[str, Any]]) -> float | None:
    """Stage after stage, the slowest model of each (their recent median latencies); None when a
    planned model has no recent latency."""
    total = 0.0
    calls = [c for c in calls if not c.get("optional")]

    def stage_of(call: dict[str, Any]) -> tuple[str, int | None]:
        # The comparison runs concurrently with the synthesis: one stage.
        return ("synthesis" if call["stage"] == "compare" else call["stage"], call.get("round"))

    for stage in dict.fromkeys(map(stage_of, calls)):
        latencies = [engine.recent_latency(c["model"]) for c in calls if stage_of(c) == stage]
        known = [x for x in latencies if x is not None]
        if len(known) != len(latencies):
            return None
        total += max(known)
    return round(total, 2) if calls else None


async def budget_left(usage: UsageStore, user_id: str) -> dict[str, Any]:
    """The user's and the key's budgets and what is left of them today (the tighter of both)."""
    settings = usage.settings
    usd, tokens = settings.llm_budget_usd_per_day, settings.llm_budget_tokens_per_day
    key = current_key.get()
    key_usd = key.budget_usd if key is not None else None
    left: list[float] = []
    left_tokens: int | None = None
    if usd is not None or tokens is not None:
        cost, used = await usage.spent_today(user_id)
        if usd is not None:
            left.append(usd - cost)
        if tokens is not None:
            left_tokens = max(tokens - used, 0)
    if key is not None and key_usd is not None:
        key_cost, _ = await usage.key_spent_since(key.key_id, start_of_day(datetime.now(UTC)))
        left.append(key_usd - key_cost)
    return {
        "usd_per_day": usd,
        "key_usd_per_day": key_usd,
        "remaining_usd": round(max(min(left), 0.0), 8) if left else None,
        "tokens_per_day": tokens,
        "remaining_tokens": left_tokens,
    }


async def estimate(llm: Llm, plan: Plan, user_id: str) -> dict[str, Any]:
    """The estimate of a plan (the ``EstimateResponse`` schema)."""
    builder = _Calls(llm.engine, plan)
    chars = len(plan.prompt) + sum(len(c) for c in plan.context or [])
    calls = await asyncio.to_thread(builder.build) if chars > INLINE_CHARS else builder.build()
    per_stage: dict[str, int] = {}
    for call in calls:
        if not call.get("optional"):  # the compare repair: made only if needed
            per_stage[call["stage"]] = per_stage.get(call["stage"], 0) + 1
    low = sum(c["cost_usd_low"] for c in calls)
    high = sum(c["cost_usd_high"] for c in calls)
    for call in calls:
        call["cost_usd_low"], call["cost_usd_high"] = round(call["cost_usd_low"], 10), round(call["cost_usd_high"], 10)
    tokens_high = sum(c["input_tokens_max"] + c["output_tokens"] for c in calls)
    budget = await budget_left(llm.usage, user_id)
    remaining = budget["remaining_usd"]
    over = high - remaining if remaining is not None and high > remaining else None
    budget["fits"] = over is None
    budget["over_by_usd"] = _up(over) if over is not None else None
    budget["fits_tokens"] = budget["remaining_tokens"] is None or tokens_high <= budget["remaining_tokens"]
    return {
        "pattern": plan.pattern,
        "calls_per_stage": per_stage,
        "calls": calls,
        "refused": {m.name: m.refusal or "" for m in plan.models if m.messages is None},
        "input_tokens": {
            "low": sum(c["input_tokens"] for c in calls),
            "high": sum(c["input_tokens_max"] for c in calls),
        },
        "output_tokens": sum(c["output_tokens"] for c in calls),
        "cost_usd": {"low": round(low, 10), "high": round(high, 10)},
        "wall_time_ms": wall_time(llm.engine, calls),
        "budget": budget,
    }


def _up(usd: float) -> float:
    """Rounded up to a millionth of a dollar: an amount over budget never reads as 0."""
    return math.ceil(usd * 1_000_000) / 1_000_000


async def check_affordable(llm: Llm, plan: Plan, user_id: str) -> None:
    """Before an orchestration's first call: refused when the budget is spent (as every call is:
    402/429, with an API key its rpm and tpm), then when the estimate's high end does not fit in
    what is left (402, saying by how much)."""
    await llm.usage.check_budget(user_id)
    key = current_key.get()
    if llm.usage.settings.llm_budget_usd_per_day is None and (key is None or key.budget_usd is None):
        return  # no budget in USD: nothing to estimate against
    answer = await estimate(llm, plan, user_id)
    budget = answer["budget"]
    if budget["fits"]:
        return
    high, left, over = answer["cost_usd"]["high"], budget["remaining_usd"], budget["over_by_usd"]
    detail = (
        f"This orchestration may cost up to ${high:.6f} (estimated: {len(answer['calls'])} calls), but ${left:.6f} "
        f"of today's budget is left: ${over:.6f} over. Use fewer models or a lower max_tokens, or wait until "
        "00:00 UTC."
    )
    raise ProblemError(
        402,
        detail,
        title="Over budget",
        extra={
            "estimated_cost_usd": high,
            "remaining_usd": left,
            "over_by_usd": over,
            "error": {"message": detail, "type": "insufficient_quota", "code": "over_budget"},
        },
    )
