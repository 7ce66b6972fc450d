"""The ``ranked`` pattern's review: each model that answered ranks the OTHER answers, anonymised and
shuffled in an order of its own, and the rankings are aggregated by Borda count.

- The shuffle: reviewer R sees the other answers as "Response A", "Response B", ... in a random
  order drawn for R alone (position bias cancels out over the reviewers); ``Ballot.order`` keeps
  the permutation (label i is ``order[i]``), so R's ranking is read back in real model names.
- The reply: JSON ``{"ranking": ["Response B", "Response A"]}`` (asked through ``response_format``
  with a JSON schema where the model supports it), else a "FINAL RANKING:" numbered list
  ("1. Response B"). ``parse_ranking`` reads both (a JSON object alone, fenced, or inside prose), and
  anything else is garbage: ``None``.
- Ties within one ranking: a JSON item that is a list of labels, or equal numbers in the list
  ("1. Response A", "1. Response B"), shares the positions it spans.
- Omissions: labels a readable ranking leaves out are tied at its bottom.
- Borda count: over the m answers a reviewer saw, position p earns m - p points; tied answers share
  the average of the points of the positions they span. A reviewer never ranks its own answer, and a
  reviewer whose ranking cannot be read (or whose call failed) abstains: it is left out and reported,
  never fatal. Since the answers are then ranked by different numbers of reviewers, the aggregate
  orders them by ``score``, the mean points per ballot that ranked them (then by mean position,
  then by name); equal scores and mean positions share a rank (1, 1, 3). An answer no readable
  ballot ranked has no score and comes last.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import string
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ultrai_llm.prompts import RANKING_INSTRUCTION, labelled_responses, with_system

if TYPE_CHECKING:
    from ultrai_llm.engine import CallResult, Messages
    from ultrai_llm.orchestrate import Emit, ModelPlan


class Call(Protocol):
    """The orchestrator's call within the plan."""

    def __call__(
        self,
        model: ModelPlan,
        messages: Messages | None,
        stage: str,
        emit: Emit | None,
        *,
        response_format: dict[str, Any] | None = None,
    ) -> Awaitable[CallResult]: ...


LABEL_PREFIX = "Response "
MAX_RANKED = len(string.ascii_uppercase)  # one letter per answer
_LABEL = re.compile(r"\bresponse\s+([A-Z])\b", re.IGNORECASE)
_BARE_LABEL = re.compile(r"^\s*(?:response\s+)?([A-Z])\s*$", re.IGNORECASE)
_HEADER = re.compile(r"final\s+ranking\s*:?", re.IGNORECASE)
_NUMBERED = re.compile(r"^\s*[#*\-]*\s*(\d+)\s*[.):\-]\s*(.*)$")
_FENCE = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL | re.IGNORECASE)

# A ranking read back: positions from best to worst, each a group of labels (more than one: a tie).
Groups = list[list[str]]


def labels_for(count: int) -> list[str]:
    return [LABEL_PREFIX + letter for letter in string.ascii_uppercase[:count]]


def ranking_schema(labels: list[str]) -> dict[str, Any]:
    """The ``response_format`` asking for ``{"ranking": [labels, best first]}``."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "ranking",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {
                    "ranking": {
                        "type": "array",
                        "items": {"type": "string", "enum": labels},
                        "description": "Every response label, best first",
                    }
                },
                "required": ["ranking"],
                "additionalProperties": False,
            },
        },
    }


# ---- parsing ------------------------------------------------------------------------------------
def _label(item: Any, labels: list[str]) -> str | None:
    if not isinstance(item, str):
        return None
    match = _BARE_LABEL.match(item) or _LABEL.search(item)
    if match is None:
        return None
    label = LABEL_PREFIX + match.group(1).upper()
    return label if label in labels else None


def _valid(groups: Groups, labels: list[str]) -> Groups | None:
    """The groups when they name known labels, each once, and at least one; else None. Labels left
    out are appended as one group, tied at the bottom."""
    named = [label for group in groups for label in group]
    if not named or len(named) != len(set(named)) or any(label not in labels for label in named):
        return None
    rest = [label for label in labels if label not in named]
    return [g for g in groups if g] + ([rest] if rest else [])


def json_candidates(text: str) -> list[str]:
    stripped = text.strip()
    found = [stripped] if stripped.startswith("{") else []
    found += _FENCE.findall(text)
    first, last = text.find("{"), text.rfind("}")
    if 0 <= first < last:
        found.append(text[first : last + 1])
    return found


def _from_json(text: str, labels: list[str]) -> Groups | None:
    for candidate in json_candidates(text):
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        items = data.get("ranking") if isinstance(data, dict) else None
        if not isinstance(items, list):
            continue
        groups: Groups = []
        for item in items:
            members = item if isinstance(item, list) else [item]
            group = [_label(member, labels) for member in members]
            if any(label is None for label in group):
                return None  # a ranking that names something else is garbage, not a partial ranking
            groups.append([label for label in group if label is not None])
        return _valid(groups, labels)
    return None


def _from_list(text: str, labels: list[str]) -> Groups | None:
    headers = list(_HEADER.finditer(text))
    if not headers:
        return None
    tail = text[headers[-1].end() :]
    numbered: list[tuple[int, str]] = []
    for line in tail.splitlines():
        match = _NUMBERED.match(line)
        if match is None:
            continue
        label = _label(match.group(2), labels)
        if label is None:
            return None
        numbered.append((int(match.group(1)), label))
    if numbered:
        groups: dict[int, list[str]] = {}
        for number, label in numbered:
            groups.setdefault(number, []).append(label)
        return _valid([groups[n] for n in sorted(groups)], labels)
    # No numbered lines: the labels in the order they are named after the header.
    mentioned = [LABEL_PREFIX + m.group(1).upper() for m in _LABEL.finditer(tail)]
    return _valid([[label] for label in dict.fromkeys(mentioned)], labels) if mentioned else None


def parse_ranking(text: str | None, labels: list[str]) -> Groups | None:
    """A reviewer's ranking of ``labels``, best first (groups of tied labels); None when the text
    holds no readable ranking: no JSON ranking and no "FINAL RANKING:" list, an unknown or repeated
    label, or nothing ranked."""
    if not text or not labels:
        return None
    return _from_json(text, labels) or _from_list(text, labels)


# ---- ballots and the Borda count -----------------------------------------------------------------
@dataclass
class Ballot:
    """One reviewer's view: the models whose answers it saw, in the order it saw them (label i is
    ``order[i]``), and what it answered once read back in model names."""

    reviewer: str
    order: list[str]
    groups: list[list[str]] | None = None  # model names, best first; None: not readable
    error: str | None = None

    @property
    def labels(self) -> list[str]:
        return labels_for(len(self.order))

    def read(self, text: str | None) -> None:
        """Parse the reply and undo the shuffle."""
        groups = parse_ranking(text, self.labels)
        if groups is None:
            self.error = "the ranking could not be read"
            return
        to_model = dict(zip(self.labels, self.order, strict=True))
        self.groups = [[to_model[label] for label in group] for group in groups]

    def points(self) -> dict[str, float]:
        """Borda points: position p of m earns m - p; a tie shares the average over its positions."""
        m = len(self.order)
        earned: dict[str, float] = {}
        position = 1
        for group in self.groups or []:
            share = sum(m - p for p in range(position, position + len(group))) / len(group)
            for model in group:
                earned[model] = share
            position += len(group)
        return earned

    def positions(self) -> dict[str, float]:
        """Each model's position (ties: the mean of the positions they span)."""
        where: dict[str, float] = {}
        position = 1
        for group in self.groups or []:
            mean = position + (len(group) - 1) / 2
            for model in group:
                where[model] = mean
            position += len(group)
        return where

    def public(self) -> dict[str, Any]:
        ranking = []
        for place, group in enumerate(self.groups or [], 1):
            ranking += [{"model": model, "position": place} for model in group]
        return {
            "reviewer": self.reviewer,
            "parsed": self.groups is not None,
            "shown_order": self.order,
            "ranking": ranking,
            "error": self.error,
        }


@dataclass
class Ranking:
    ballots: list[Ballot] = field(default_factory=list)

    def aggregate(self, models: list[str]) -> list[dict[str, Any]]:
        """Borda count over the readable ballots (see the module's docstring)."""
        points = {m: 0.0 for m in models}
        positions: dict[str, list[float]] = {m: [] for m in models}
        ballots = {m: 0 for m in models}
        for ballot in self.ballots:
            if ballot.groups is None:
                continue
            where = ballot.positions()
            for model, earned in ballot.points().items():
                points[model] += earned
                ballots[model] += 1
                positions[model].append(where[model])
        rows = [
            {
                "model": m,
                "points": round(points[m], 4),
                "ballots": ballots[m],
                "score": round(points[m] / ballots[m], 4) if ballots[m] else None,
                "mean_position": round(sum(positions[m]) / len(positions[m]), 4) if positions[m] else None,
            }
            for m in models
        ]

        def order(row: dict[str, Any]) -> tuple[int, float, float, str]:
            if row["score"] is None:
                return (1, 0.0, 0.0, row["model"])
            return (0, -row["score"], row["mean_position"], row["model"])

        rows.sort(key=order)
        previous: tuple[int, float, float] | None = None
        for index, row in enumerate(rows, 1):
            key = order(row)[:3]
            if row["score"] is None:
                row["rank"] = None
            elif key != previous:
                row["rank"] = index
            else:
                row["rank"] = rows[index - 2]["rank"]
            previous = key
        return rows

    def public(self, models: list[str]) -> dict[str, Any]:
        return {
            "method": "borda",
            "reviewers": [b.public() for b in self.ballots],
            "left_out": [b.reviewer for b in self.ballots if b.groups is None],
            "aggregate": self.aggregate(models),
        }


def shuffled_ballots(answered: list[str], rng: random.Random | None = None) -> list[Ballot]:
    """One ballot per model that answered: the others' answers in an order drawn for it alone."""
    rng = rng or random.SystemRandom()
    ballots = []
    for reviewer in answered:
        others = [m for m in answered if m != reviewer]
        rng.shuffle(others)
        ballots.append(Ballot(reviewer, others))
    return ballots


def ranking_prompt(question: str, ballot: Ballot, texts: dict[str, str]) -> str:
    """What reviewer ``ballot.reviewer`` is asked: the question and the others' answers, labelled in
    its own order."""
    shown = labelled_responses([texts[m] for m in ballot.order])
    return RANKING_INSTRUCTION.format(question=question, responses=shown, example=", ".join(ballot.labels[:2]))


def aggregate_text(rows: list[dict[str, Any]], numbers: dict[str, int]) -> str:
    """The aggregate for the synthesis prompt, in the synthesis's own answer numbers (best first)."""
    lines = []
    for row in rows:
        if row["score"] is None:
            lines.append(f"- Answer {numbers[row['model']]}: not ranked")
        else:
            lines.append(
                f"{row['rank']}. Answer {numbers[row['model']]} "
                f"(mean Borda points {row['score']:g} over {row['ballots']} reviewer(s))"
            )
    return "\n".join(lines)


def distinct(names: list[str]) -> list[str]:
    """The names, a repeated one numbered from its second time ("model (2)"): the same model may
    answer more than once (samples)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


async def rank_stage(
    ok: list[tuple[ModelPlan, CallResult]], call: Call, emit: Emit | None, structured: set[str]
) -> tuple[list[CallResult], dict[str, Any], str]:
    """Every model that answered ranks the others (concurrently): the calls' results, the ranking
    as the answer shows it (also emitted as a ``ranking`` event), and the aggregate's text for the
    synthesis (whose answers are numbered in the order of ``ok``). The models in ``structured`` are
    asked for the JSON through ``response_format``."""
    keys = distinct([m.name for m, _ in ok])
    texts = {key: r.text or "" for key, (_, r) in zip(keys, ok, strict=True)}
    plans = {key: m for key, (m, _) in zip(keys, ok, strict=True)}
    ballots = shuffled_ballots(keys)
    if emit is not None:
        await emit("stage", {"stage": "review", "models": [m.name for m, _ in ok]})

    async def review(ballot: Ballot) -> CallResult:
        me = plans[ballot.reviewer]
        content = ranking_prompt(me.question, ballot, texts)
        messages = with_system(me.params.system_prompt, [{"role": "user", "content": content}])
        schema = ranking_schema(ballot.labels) if me.name in structured else None
        result = await call(me, messages, "review", emit, response_format=schema)
        if result.ok:
            ballot.read(result.text)
        else:
            ballot.error = f"the call failed: {result.error}"
        return result

    results = list(await asyncio.gather(*(review(b) for b in ballots)))
    answer = Ranking(ballots).public(keys)
    if emit is not None:
        await emit("ranking", answer)
    return results, answer, aggregate_text(answer["aggregate"], {key: i for i, key in enumerate(keys, 1)})
