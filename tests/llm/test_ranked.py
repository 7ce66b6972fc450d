"""The ranked pattern over the real litellm path: each reviewer ranks the others' answers, shown
anonymised in an order of its own; the fake provider reads the order it was sent and ranks
accordingly, in JSON, as a FINAL RANKING list, or as garbage."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.llm.conftest import parse_sse, unique
from ultrai_llm.schemas import OrchestrateResponse

pytestmark = pytest.mark.e2e

RANKERS = ["ranker-a", "ranker-b", "ranker-c", "ranker-d"]
ANSWERS = {
    "ranker-a": "Mercury orbits closest, at 0.39 AU.",
    "ranker-b": "Venus, I believe.",
    "ranker-c": "Mercury: its mean distance is 58 million km, the smallest of all planets.",
    "ranker-d": "It is Mercury.",
}
# What every reviewer thinks, best first (each leaves itself out).
PREFERENCE = ["ranker-c", "ranker-a", "ranker-d", "ranker-b"]
SHOWN = re.compile(r"Response ([A-Z]):\n(.*?)(?=\n\nResponse [A-Z]:|\n\nEvaluate)", re.DOTALL)


class Reviewers:
    """The fake's replies: the answer at the answer stage; at the review stage a ranking of what
    it was shown, in this reviewer's format. Records the order each reviewer was shown."""

    def __init__(self, fake: FakeOpenAI, formats: dict[str, str]) -> None:
        self.shown: dict[str, list[list[str]]] = {m: [] for m in RANKERS}
        for model in RANKERS:
            fake.behave(model, reply=lambda messages, model=model: self.reply(model, formats[model], messages))

    def reply(self, model: str, form: str, messages: list[dict[str, Any]]) -> str:
        content = messages[-1]["content"]
        if "Response A:" not in content:
            return ANSWERS[model]
        by_text = {text: m for m, text in ANSWERS.items()}
        order = [by_text[text] for _, text in SHOWN.findall(content)]
        self.shown[model].append(order)
        label = {m: f"Response {chr(ord('A') + i)}" for i, m in enumerate(order)}
        best_first = [label[m] for m in PREFERENCE if m in label]
        if form == "json":
            return json.dumps({"ranking": best_first})
        if form == "list":
            lines = "\n".join(f"{i}. {x}" for i, x in enumerate(best_first, 1))
            return f"{best_first[0]} is the most precise.\n\nFINAL RANKING:\n{lines}"
        if form == "fail":
            raise RuntimeError("the fake provider fails this review")  # answered 500
        return "All of these answers have merit; I would not rank them."


FORMATS = {"ranker-a": "json", "ranker-b": "list", "ranker-c": "garbage", "ranker-d": "list"}


async def test_ranked_reviews_shuffled_answers_and_the_synthesis_sees_the_aggregate(gateway, fake_provider):
    reviewers = Reviewers(fake_provider, FORMATS)
    fake_provider.behave("writer", text="Mercury is the closest planet to the Sun.")
    prompt = unique("Which planet is closest to the Sun?")
    r = await gateway.post(
        "/api/v1/llm/orchestrate",
        json={"prompt": prompt, "models": RANKERS, "pattern": "ranked", "synthesis_model": "writer", "cache": False},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    OrchestrateResponse.model_validate(body)  # the contract, ranking included
    assert body["pattern"] == "ranked" and body["status"] == "completed"
    stages = sorted((x["model"], x["stage"]) for x in body["results"])
    assert stages == sorted([(m, "answer") for m in RANKERS] + [(m, "review") for m in RANKERS])
    assert body["synthesis"]["text"] == "Mercury is the closest planet to the Sun."

    ranking = body["ranking"]
    assert ranking["method"] == "borda" and ranking["left_out"] == ["ranker-c"]
    for reviewer in ranking["reviewers"]:
        me = reviewer["reviewer"]
        # The order the service says it showed is the order the fake received.
        assert [reviewer["shown_order"]] == reviewers.shown[me]
        assert sorted(reviewer["shown_order"]) == sorted(m for m in RANKERS if m != me)
        if me == "ranker-c":
            assert reviewer["parsed"] is False and reviewer["ranking"] == [] and reviewer["error"]
            continue
        # Read back in model names, the shuffle undone: every reviewer's preference, itself left out.
        assert reviewer["parsed"] is True
        assert [x["model"] for x in reviewer["ranking"]] == [m for m in PREFERENCE if m != me]
        assert [x["position"] for x in reviewer["ranking"]] == [1, 2, 3]
    # Borda over the three readable ballots (3 answers each: 2, 1, 0 points), mean per ballot:
    # c 6/3, a (1 from b, 1 from d) 2/2, d (1 from a, 0 from b) 1/2, b 0/2.
    aggregate = [(x["model"], x["rank"], x["score"], x["ballots"]) for x in ranking["aggregate"]]
    assert aggregate == [
        ("ranker-c", 1, 2.0, 3),
        ("ranker-a", 2, 1.0, 2),
        ("ranker-d", 3, 0.5, 2),
        ("ranker-b", 4, 0.0, 2),
    ]

    for model in RANKERS:
        sent = fake_provider.calls(model)[-1].body
        instruction = sent["messages"][-1]["content"]
        # Anonymised: no model name; the reviewer's own answer is not among those it ranks.
        assert not any(name in instruction for name in RANKERS)
        assert ANSWERS[model] not in instruction
        assert all(ANSWERS[m] in instruction for m in RANKERS if m != model)
        # A JSON schema where the model takes one (ranker-a, per the models file), else the prompt asks.
        if model == "ranker-a":
            schema = sent["response_format"]["json_schema"]["schema"]
            assert schema["properties"]["ranking"]["items"]["enum"] == ["Response A", "Response B", "Response C"]
        else:
            assert "response_format" not in sent
        assert "FINAL RANKING:" in instruction

    # The synthesis sees every answer (numbered in the request's order) and the aggregate, best first.
    synthesis = fake_provider.calls("writer")[-1].body["messages"][-1]["content"]
    assert all(text in synthesis for text in ANSWERS.values())
    assert "1. Answer 3 (mean Borda points 2 over 3 reviewer(s))" in synthesis
    assert synthesis.index("Answer 3 (") < synthesis.index("Answer 1 (") < synthesis.index("Answer 4 (")
    assert "Answer 2 (mean Borda points 0 over 2" in synthesis


async def test_a_reviewer_whose_call_fails_is_left_out_and_reported(gateway, fake_provider):
    Reviewers(fake_provider, {"ranker-a": "json", "ranker-b": "fail", "ranker-c": "list", "ranker-d": "json"})
    fake_provider.behave("writer", text="still synthesised")
    r = await gateway.post(
        "/api/v1/llm/orchestrate",
        json={"prompt": unique(), "models": RANKERS[:3], "pattern": "ranked", "synthesis_model": "writer"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "partial" and body["synthesis"]["text"] == "still synthesised"
    failed = next(x for x in body["results"] if x["model"] == "ranker-b" and x["stage"] == "review")
    assert failed["status"] == "error"
    ranking = body["ranking"]
    assert ranking["left_out"] == ["ranker-b"]
    b = next(x for x in ranking["reviewers"] if x["reviewer"] == "ranker-b")
    assert b["parsed"] is False and b["error"].startswith("the call failed")
    # The two readable ballots (2 answers each: 1 and 0 points): a ranks c > b, c ranks a > b.
    aggregate = [(x["model"], x["rank"], x["score"], x["ballots"]) for x in ranking["aggregate"]]
    assert aggregate == [("ranker-a", 1, 1.0, 1), ("ranker-c", 1, 1.0, 1), ("ranker-b", 3, 0.0, 2)]


async def test_each_reviewer_sees_an_order_of_its_own(gateway, fake_provider):
    """Random per reviewer: over three runs of four reviewers (3! orders each), not every one saw the
    others in the request's order (the chance of that without a shuffle is 1; with it, 6^-12)."""
    reviewers = Reviewers(fake_provider, dict.fromkeys(RANKERS, "json"))
    fake_provider.behave("writer", text="ok")
    for _ in range(3):
        r = await gateway.post(
            "/api/v1/llm/orchestrate",
            json={"prompt": unique(), "models": RANKERS, "pattern": "ranked", "synthesis_model": "writer"},
        )
        assert r.status_code == 200, r.text
        # Whatever order each saw, the ranking read back is the same: every reviewer agrees.
        assert [x["model"] for x in r.json()["ranking"]["aggregate"]] == PREFERENCE
    seen = [(model, order) for model, orders in reviewers.shown.items() for order in orders]
    assert len(seen) == 12
    canonical = {model: [m for m in RANKERS if m != model] for model in RANKERS}
    assert any(order != canonical[model] for model, order in seen)


async def test_ranked_streams_the_ranking_as_an_event(gateway, fake_provider):
    Reviewers(fake_provider, dict.fromkeys(RANKERS, "list"))
    fake_provider.behave("writer", text="streamed synthesis")
    r = await gateway.post(
        "/api/v1/llm/orchestrate",
        json={
            "prompt": unique(),
            "models": RANKERS[:3],
            "pattern": "ranked",
            "synthesis_model": "writer",
            "stream": True,
        },
    )
    assert r.status_code == 200, r.text
    events = parse_sse(r.text)
    names = [e for e, _ in events]
    stages = [d["stage"] for e, d in events if e == "stage"]
    assert stages == ["answer", "review", "synthesis"]
    ranking = next(d for e, d in events if e == "ranking")
    # After the review stage's results, before the synthesis stage.
    assert names.index("ranking") < [i for i, (e, d) in enumerate(events) if e == "stage"][2]
    done = events[-1][1]
    assert done["ranking"] == ranking and ranking["left_out"] == []


async def test_ultrai_ranked_is_a_virtual_model(gateway, fake_provider):
    listed = (await gateway.get("/v1/models")).json()["data"]
    assert "ultrai/ranked" in {m["id"] for m in listed}
    assert "ultrai/ranked" in (await gateway.get("/api/v1/llm/models")).json()["patterns"]
    Reviewers(fake_provider, dict.fromkeys(RANKERS, "json"))
    fake_provider.behave("writer", text="the chairman's answer")
    r = await gateway.post(
        "/v1/chat/completions",
        json={
            "model": "ultrai/ranked",
            "messages": [{"role": "user", "content": unique()}],
            "models": ["ranker-a", "ranker-b"],
            "synthesis_model": "writer",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "the chairman's answer"
    # Two answers: each reviewer ranks the one other answer.
    assert [x["model"] for x in body["ultrai"]["ranking"]["aggregate"]] == ["ranker-a", "ranker-b"]
    assert body["ultrai"]["ranking"]["aggregate"][0]["rank"] == body["ultrai"]["ranking"]["aggregate"][1]["rank"] == 1
