"""The judge's structured comparison (``"compare": true``, stage "compare"): beside the synthesis, in
a call of its own run concurrently with it, the synthesis model compares the answers the synthesis
sees (anonymised as "Answer 1", "Answer 2", ... in the same order) as JSON of ``ComparisonDraft``:
``consensus``, ``contradictions``, ``unique_insights`` and ``gaps``, each a list of points tied to
the answers they concern by their labels.

- The JSON is asked for in the prompt (``COMPARE_INSTRUCTION``) and, where the model takes a JSON
  schema (the catalog's ``response_schema``), through ``response_format`` too, the labels as an enum.
- The reply is read tolerantly (a JSON object alone, fenced or inside prose, as the ranked pattern
  reads a ranking) and validated against the pydantic schema. When it is not valid, ONE repair call
  sends the model its reply, the validation error and the schema, asking for the corrected JSON
  only; when that is not valid either (or fails), the comparison is ``"status": "invalid"`` with the
  error. A failed first call is ``"status": "failed"``. Never fatal: the synthesis and the rest of
  the orchestration go on.
- Labels are read back to model names ("answer 2", "2" and "Answer #2" read as "Answer 2"); a label
  that names no answer is dropped from its point and reported in ``dropped_labels``.

Every call (the repair too) is recorded in usage and listed in the results like any other call.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ultrai_llm.prompts import COMPARE_REPAIR_INSTRUCTION, with_system
from ultrai_llm.ranking import json_candidates
from ultrai_llm.schemas import ComparisonDraft

if TYPE_CHECKING:
    from ultrai_llm.engine import CallResult, Messages
    from ultrai_llm.orchestrate import Emit, ModelPlan
    from ultrai_llm.ranking import Call

CATEGORIES = ("consensus", "contradictions", "unique_insights", "gaps")
LABEL_PREFIX = "Answer "
_LABEL = re.compile(r"^\s*(?:answer\s*)?#?\s*(\d+)\s*$", re.IGNORECASE)
ERRORS_SHOWN = 5  # validation errors quoted (in the repair prompt and the answer), at most


def answer_labels(count: int) -> list[str]:
    return [f"{LABEL_PREFIX}{i}" for i in range(1, count + 1)]


def draft_schema(labels: list[str] | None = None) -> dict[str, Any]:
    """The JSON schema of ``ComparisonDraft``; with ``labels``, a point's answers are limited to them."""
    schema = ComparisonDraft.model_json_schema()
    if labels is not None:
        schema["$defs"]["ComparisonPoint"]["properties"]["answers"]["items"]["enum"] = labels
    return schema


def comparison_format(labels: list[str]) -> dict[str, Any]:
    """The ``response_format`` asking for the comparison."""
    schema = draft_schema(labels)
    return {"type": "json_schema", "json_schema": {"name": "comparison", "strict": True, "schema": schema}}


def _describe(exc: ValidationError) -> str:
    errors = exc.errors()
    parts = [f"{'.'.join(map(str, e['loc'])) or '(the object)'}: {e['msg']}" for e in errors[:ERRORS_SHOWN]]
    more = len(errors) - ERRORS_SHOWN
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def read_draft(text: str | None) -> tuple[ComparisonDraft | None, str]:
    """The reply validated against the schema, or None and why not (the first JSON candidate's error)."""
    candidates = json_candidates(text or "")
    if not candidates:
        return None, "the reply holds no JSON object"
    error = ""
    for candidate in candidates:
        try:
            return ComparisonDraft.model_validate_json(candidate), ""
        except ValidationError as exc:
            error = error or _describe(exc)
    return None, error


def label_of(given: str, count: int) -> str | None:
    """The answer's label a given label names, or None when it names no answer."""
    match = _LABEL.match(given)
    if match is None or not 1 <= int(match.group(1)) <= count:
        return None
    return f"{LABEL_PREFIX}{int(match.group(1))}"


def mapped(draft: ComparisonDraft, models: list[str]) -> dict[str, Any]:
    """The points with their labels read back to model names; labels naming no answer dropped and
    listed (each once)."""
    labels = dict(zip(answer_labels(len(models)), models, strict=True))
    dropped: list[str] = []
    out: dict[str, Any] = {}
    for category in CATEGORIES:
        points = []
        for item in getattr(draft, category):
            known = []
            for given in item.answers:
                label = label_of(given, len(models))
                if label is None:
                    dropped.append(given)
                elif label not in known:
                    known.append(label)
            points.append({"point": item.point, "answers": known, "models": [labels[x] for x in known]})
        out[category] = points
    out["dropped_labels"] = list(dict.fromkeys(dropped))
    return out


async def compare_stage(
    judge: ModelPlan, messages: Messages | None, models: list[str], call: Call, emit: Emit | None, structured: bool
) -> tuple[list[CallResult], dict[str, Any]]:
    """The comparison of the answers of ``models`` (in the order they are labelled in ``messages``):
    the calls' results (one, or two with a repair) and the comparison as the answer shows it (also
    emitted as a ``comparison`` event)."""
    if emit is not None:
        await emit("stage", {"stage": "compare", "models": [judge.name]})
    labels = answer_labels(len(models))
    response_format = comparison_format(labels) if structured else None
    comparison: dict[str, Any] = {
        "status": "ok",
        "model": judge.name,
        "labels": dict(zip(labels, models, strict=True)),
        "repaired": False,
        "error": None,
        **{category: [] for category in CATEGORIES},
        "dropped_labels": [],
    }
    first = await call(judge, messages, "compare", emit, response_format=response_format)
    results = [first]
    if not first.ok:
        comparison.update(status="failed", error=f"the call failed: {first.error}")
    else:
        draft, error = read_draft(first.text)
        if draft is None:
            comparison["repaired"] = True
            repair = COMPARE_REPAIR_INSTRUCTION.format(
                reply=first.text or "", error=error, schema=json.dumps(draft_schema(labels))
            )
            again = await call(
                judge,
                with_system(judge.params.system_prompt, [{"role": "user", "content": repair}]),
                "compare",
                emit,
                response_format=response_format,
            )
            results.append(again)
            if again.ok:
                draft, error = read_draft(again.text)
                error = f"not valid after one repair: {error}" if draft is None else ""
            else:
                error = f"not valid ({error}), and the repair call failed: {again.error}"
        if draft is None:
            comparison.update(status="invalid", error=error)
        else:
            comparison.update(mapped(draft, models))
    if emit is not None:
        await emit("comparison", comparison)
    return results, comparison
