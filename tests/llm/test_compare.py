"""The judge's structured comparison (``"compare": true``, ultrai_llm/compare.py) over the real litellm
path: the fake provider answers the answer, synthesis, compare and repair prompts each from what it
was sent, so the tests see what the judge was shown and how its JSON is read back."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.llm.conftest import parse_sse, unique
from tests.llm.test_estimate import TEXTS, completion_tokens, counted
from tests.llm.test_orchestrate_ws import orchestrate, ws_url
from tests.support.waiting import eventually
from tools.stack import Stack
from ultrai_llm.schemas import EstimateResponse, OrchestrateResponse

pytestmark = pytest.mark.e2e

ORCHESTRATE = "/api/v1/llm/orchestrate"
ANSWERERS = ["ranker-b", "ranker-c", "ranker-d"]
ANSWERS = {
    "ranker-b": "Mercury is closest to the Sun.",
    "ranker-c": "Venus is closest to the Sun.",
    "ranker-d": "Mercury, at a mean distance of 58 million km.",
}
SYNTHESIS = "Mercury is the closest planet to the Sun."
# A valid comparison of the answers in the request's order (Answer 1 is ranker-b, ...).
VALID = {
    "consensus": [{"point": "Mercury is closest.", "answers": ["Answer 1", "Answer 3"]}],
    "contradictions": [{"point": "Mercury or Venus.", "answers": ["answer 2", "Answer 1", "3"]}],
    "unique_insights": [{"point": "The mean distance is 58 million km.", "answers": ["Answer 3"]}],
    "gaps": [{"point": "None says how the distance varies over the orbit.", "answers": []}],
}


class Judge:
    """The fake's replies: each answerer its answer; the judge the synthesis, then its compare
    replies in turn (the first to the compare prompt, the next to the repair prompt)."""

    def __init__(self, fake: FakeOpenAI, judge: str, replies: list[str]) -> None:
        self.replies = list(replies)
        self.prompts: dict[str, list[str]] = {"synthesis": [], "compare": [], "repair": []}
        for model, text in ANSWERS.items():
            fake.behave(model, text=text)
        fake.behave(judge, reply=self.reply)

    def reply(self, messages: list[dict[str, Any]]) -> str:
        content = messages[-1]["content"]
        if content.startswith("Your reply below was meant to be a JSON object"):
            self.prompts["repair"].append(content)
            return self.replies.pop(0)
        if "Do not answer the question: compare the answers." in content:
            self.prompts["compare"].append(content)
            return self.replies.pop(0)
        self.prompts["synthesis"].append(content)
        return SYNTHESIS


def body(judge: str = "writer", **extra: Any) -> dict[str, Any]:
    return {
        "prompt": unique("Which planet is closest to the Sun?"),
        "models": ANSWERERS,
        "synthesis_model": judge,
        "compare": True,
        "cache": False,
        **extra,
    }


def stages(answer: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((x["model"], x["stage"]) for x in answer["results"])


async def test_the_comparison_is_read_back_in_model_names(gateway, fake_provider: FakeOpenAI):
    judge = Judge(fake_provider, "writer", [json.dumps(VALID)])
    r = await gateway.post(ORCHESTRATE, json=body())
    assert r.status_code == 200, r.text
    answer = r.json()
    OrchestrateResponse.model_validate(answer)  # the contract, the comparison included
    assert answer["status"] == "completed" and answer["synthesis"]["text"] == SYNTHESIS
    assert stages(answer) == sorted([(m, "answer") for m in ANSWERERS] + [("writer", "compare")])
    comparison = answer["comparison"]
    assert comparison["status"] == "ok" and comparison["repaired"] is False and comparison["error"] is None
    assert comparison["model"] == "writer"
    assert comparison["labels"] == {"Answer 1": "ranker-b", "Answer 2": "ranker-c", "Answer 3": "ranker-d"}
    assert comparison["consensus"] == [
        {"point": "Mercury is closest.", "answers": ["Answer 1", "Answer 3"], "models": ["ranker-b", "ranker-d"]}
    ]
    # Labels as the judge spelled them, read back (and in the order it gave them).
    assert comparison["contradictions"][0]["answers"] == ["Answer 2", "Answer 1", "Answer 3"]
    assert comparison["contradictions"][0]["models"] == ["ranker-c", "ranker-b", "ranker-d"]
    assert comparison["unique_insights"][0]["models"] == ["ranker-d"]
    assert comparison["gaps"] == [{"point": VALID["gaps"][0]["point"], "answers": [], "models": []}]
    assert comparison["dropped_labels"] == []

    # The judge saw every answer, numbered in the request's order, anonymised; the prompt asks for JSON.
    (shown,) = judge.prompts["compare"]
    assert [shown.index(ANSWERS[m]) for m in ANSWERERS] == sorted(shown.index(ANSWERS[m]) for m in ANSWERERS)
    assert "Answer 1:\n" + ANSWERS["ranker-b"] in shown
    assert not any(m in shown for m in ANSWERERS)
    assert '"unique_insights"' in shown and len(judge.prompts["synthesis"]) == 1
    # writer takes no JSON schema: asked in the prompt only.
    compare_call = next(c for c in fake_provider.calls("writer") if "compare the answers" in str(c.body["messages"]))
    assert "response_format" not in compare_call.body
    # The compare call counts in the usage like any call.
    calls = [*answer["results"], answer["synthesis"]]
    assert answer["usage"]["prompt_tokens"] == sum(c["prompt_tokens"] for c in calls)
    assert next(c for c in answer["results"] if c["stage"] == "compare")["prompt_tokens"] > 0


async def test_a_schema_capable_judge_is_sent_the_schema(gateway, fake_provider: FakeOpenAI):
    # ranker-a takes a JSON schema (the models file); its reply fenced in prose is still read.
    Judge(fake_provider, "ranker-a", ["Here it is:\n```json\n" + json.dumps(VALID) + "\n```"])
    r = await gateway.post(ORCHESTRATE, json=body("ranker-a"))
    assert r.status_code == 200, r.text
    assert r.json()["comparison"]["status"] == "ok"
    sent = [c.body for c in fake_provider.calls("ranker-a")]
    compare_call = next(b for b in sent if "compare the answers" in str(b["messages"]))
    schema = compare_call["response_format"]["json_schema"]["schema"]
    assert compare_call["response_format"]["json_schema"]["name"] == "comparison"
    assert schema["required"] == ["consensus", "contradictions", "unique_insights", "gaps"]
    point = schema["$defs"]["ComparisonPoint"]
    assert point["properties"]["answers"]["items"]["enum"] == ["Answer 1", "Answer 2", "Answer 3"]
    # The synthesis call is not asked for JSON.
    synthesis_call = next(b for b in sent if "Write the single best answer" in str(b["messages"]))
    assert "response_format" not in synthesis_call


async def test_an_invalid_reply_gets_exactly_one_repair(gateway, fake_provider: FakeOpenAI):
    broken = json.dumps({"consensus": [{"point": "Mercury."}], "contradictions": []})
    judge = Judge(fake_provider, "writer", [broken, json.dumps(VALID)])
    r = await gateway.post(ORCHESTRATE, json=body())
    assert r.status_code == 200, r.text
    answer = r.json()
    comparison = answer["comparison"]
    assert comparison["status"] == "ok" and comparison["repaired"] is True
    assert comparison["consensus"][0]["models"] == ["ranker-b", "ranker-d"]
    assert len(judge.prompts["compare"]) == 1 and len(judge.prompts["repair"]) == 1
    assert len(fake_provider.calls("writer")) == 3  # the synthesis, the comparison and its repair
    # The repair shows the model its reply, what is wrong with it and the schema.
    (repair,) = judge.prompts["repair"]
    assert broken in repair
    assert "consensus.0.answers: Field required" in repair and "unique_insights: Field required" in repair
    assert '"ComparisonPoint"' in repair
    assert [x["stage"] for x in answer["results"] if x["model"] == "writer"] == ["compare", "compare"]
    assert answer["status"] == "completed"


async def test_invalid_twice_is_reported_and_the_orchestration_goes_on(gateway, fake_provider: FakeOpenAI):
    judge = Judge(fake_provider, "writer", ["I would rather not use JSON.", '{"consensus": "all of them"}'])
    r = await gateway.post(ORCHESTRATE, json=body())
    assert r.status_code == 200, r.text
    answer = r.json()
    OrchestrateResponse.model_validate(answer)
    assert answer["status"] == "completed" and answer["synthesis"]["text"] == SYNTHESIS
    comparison = answer["comparison"]
    assert comparison["status"] == "invalid" and comparison["repaired"] is True
    assert comparison["error"].startswith("not valid after one repair: consensus: Input should be a valid array")
    assert comparison["consensus"] == [] and comparison["gaps"] == []
    assert len(judge.prompts["repair"]) == 1 and len(fake_provider.calls("writer")) == 3
    assert "the reply holds no JSON object" in judge.prompts["repair"][0]


async def test_labels_naming_no_answer_are_dropped_and_reported(gateway, fake_provider: FakeOpenAI):
    odd = dict(VALID, consensus=[{"point": "Mercury.", "answers": ["Answer 1", "Answer 7", "GPT", "Answer 1"]}])
    odd["gaps"] = [{"point": "Orbits.", "answers": ["Answer 0", "GPT"]}]
    Judge(fake_provider, "writer", [json.dumps(odd)])
    r = await gateway.post(ORCHESTRATE, json=body())
    assert r.status_code == 200, r.text
    comparison = r.json()["comparison"]
    assert comparison["status"] == "ok" and comparison["repaired"] is False
    assert comparison["consensus"] == [{"point": "Mercury.", "answers": ["Answer 1"], "models": ["ranker-b"]}]
    assert comparison["gaps"] == [{"point": "Orbits.", "answers": [], "models": []}]
    assert comparison["dropped_labels"] == ["Answer 7", "GPT", "Answer 0"]


async def test_without_compare_there_is_no_extra_call(gateway, fake_provider: FakeOpenAI):
    judge = Judge(fake_provider, "writer", [])
    r = await gateway.post(ORCHESTRATE, json=body(compare=False))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer.get("comparison") is None
    assert len(fake_provider.calls("writer")) == 1 and judge.prompts["compare"] == []
    assert all(x["stage"] == "answer" for x in answer["results"])


async def test_the_comparison_runs_beside_the_synthesis(gateway, fake_provider: FakeOpenAI):
    """Both of the judge's calls reach the provider before either is answered."""
    Judge(fake_provider, "writer", [json.dumps(VALID)])
    gate = fake_provider.hold("writer")
    run = asyncio.create_task(gateway.post(ORCHESTRATE, json=body()))
    try:

        async def received() -> int:
            return len(fake_provider.calls("writer"))

        await eventually(received, lambda n: n == 2, what="the synthesis and compare requests, both held")
    finally:
        gate.set()
    r = await run
    assert r.status_code == 200, r.text
    assert r.json()["comparison"]["status"] == "ok" and r.json()["synthesis"]["text"] == SYNTHESIS


async def test_a_failed_compare_call_is_reported_without_a_repair(gateway, fake_provider: FakeOpenAI):
    judge = Judge(fake_provider, "writer", [])

    def reply(messages: list[dict[str, Any]]) -> str:
        if "compare the answers" in messages[-1]["content"]:
            raise RuntimeError("the fake provider fails the comparison")  # answered 500
        return judge.reply(messages)

    fake_provider.behave("writer", reply=reply)
    r = await gateway.post(ORCHESTRATE, json=body())
    assert r.status_code == 200, r.text
    answer = r.json()
    OrchestrateResponse.model_validate(answer)
    # A failed call makes the run partial, as any failed call does; the synthesis is there.
    assert answer["status"] == "partial" and answer["synthesis"]["text"] == SYNTHESIS
    comparison = answer["comparison"]
    assert comparison["status"] == "failed" and comparison["error"].startswith("the call failed:")
    assert comparison["repaired"] is False and judge.prompts["repair"] == []
    (failed,) = [x for x in answer["results"] if x["stage"] == "compare"]
    assert failed["status"] == "error"


async def test_ranked_with_compare(gateway, fake_provider: FakeOpenAI):
    """After the ranked review, the judge compares the answers the synthesis sees."""
    judge = Judge(fake_provider, "writer", [json.dumps(VALID)])
    r = await gateway.post(ORCHESTRATE, json=body(pattern="ranked"))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert [x["stage"] for x in answer["results"]] == ["answer"] * 3 + ["review"] * 3 + ["compare"]
    assert answer["ranking"] is not None and answer["comparison"]["status"] == "ok"
    assert answer["comparison"]["unique_insights"][0]["models"] == ["ranker-d"]
    assert "aggregate ranking" in judge.prompts["synthesis"][0]
    assert "aggregate ranking" not in judge.prompts["compare"][0]


async def test_compare_needs_a_synthesis(gateway, fake_provider: FakeOpenAI):
    for pattern in ("parallel", "peer_review"):
        r = await gateway.post(ORCHESTRATE, json={**body(), "pattern": pattern, "synthesis_model": None})
        assert r.status_code == 422, r.text
        assert "compare needs a synthesis" in r.json()["detail"]
    assert fake_provider.calls() == []


async def test_with_one_answer_there_is_nothing_to_compare(gateway, fake_provider: FakeOpenAI):
    judge = Judge(fake_provider, "writer", [json.dumps(VALID)])
    fake_provider.behave("ranker-c", status=500)
    r = await gateway.post(ORCHESTRATE, json={**body(), "models": ["ranker-b", "ranker-c"]})
    assert r.status_code == 200, r.text
    assert r.json()["comparison"] is None and judge.prompts["compare"] == []


async def test_the_stream_has_the_comparison_event(gateway, fake_provider: FakeOpenAI):
    Judge(fake_provider, "writer", [json.dumps(VALID)])
    r = await gateway.post(ORCHESTRATE, json=body(stream=True))
    assert r.status_code == 200, r.text
    events = parse_sse(r.text)
    assert sorted(d["stage"] for e, d in events if e == "stage") == ["answer", "compare", "synthesis"]
    (comparison,) = [d for e, d in events if e == "comparison"]
    assert comparison["status"] == "ok" and comparison["consensus"][0]["models"] == ["ranker-b", "ranker-d"]
    assert events[-1][1]["comparison"] == comparison
    compare_results = [d for e, d in events if e == "result" and d["stage"] == "compare"]
    assert [d["model"] for d in compare_results] == ["writer"]
    # The comparison event follows the compare call's result.
    names = [e for e, _ in events]
    assert names.index("comparison") > next(i for i, (e, d) in enumerate(events) if d.get("stage") == "compare")


async def test_the_websocket_has_the_comparison_event(llm_stack: Stack, token: str, fake_provider: FakeOpenAI):
    Judge(fake_provider, "writer", ["not JSON", json.dumps(VALID)])
    events, close = await orchestrate(ws_url(llm_stack, "llm"), {"token": token, "request": body()})
    assert close.code == 1000
    (comparison,) = [e for e in events if e["event"] == "comparison"]
    assert comparison["status"] == "ok" and comparison["repaired"] is True
    assert events[-1]["event"] == "done" and events[-1]["comparison"]["labels"] == comparison["labels"]


async def test_the_estimate_plans_the_comparison_and_its_repair(gateway, fake_provider: FakeOpenAI):
    """The compare call is planned like the synthesis (its input holds every answer); its repair
    counts in the high end only. metered-w answers prose, so the repair is made here: both calls
    lie within their estimates."""
    counted(fake_provider)
    params = {m: {"max_tokens": completion_tokens(m)} for m in ("metered-a", "metered-b")}
    request = {
        "prompt": unique("Notice?"),
        "models": ["metered-a", "metered-b"],
        "synthesis_model": "metered-w",
        "params": params,
        "compare": True,
        "cache": False,
    }
    estimate = (await gateway.post("/api/v1/llm/orchestrate/estimate", json=request)).json()
    EstimateResponse.model_validate(estimate)
    assert estimate["calls_per_stage"] == {"answer": 2, "synthesis": 1, "compare": 1}
    compare, repair = [c for c in estimate["calls"] if c["stage"] == "compare"]
    assert compare["optional"] is False and repair["optional"] is True
    assert repair["input_tokens"] == 0 and repair["cost_usd_low"] == 0 and repair["cost_usd_high"] > 0
    low = sum(c["cost_usd_low"] for c in estimate["calls"] if c is not repair)
    assert estimate["cost_usd"]["low"] == pytest.approx(low, abs=1e-9)

    r = await gateway.post(ORCHESTRATE, json=request)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["comparison"]["status"] == "invalid"  # prose twice
    first, again = [x for x in answer["results"] if x["stage"] == "compare"]
    # The answers are as long as estimated: the compare input is the high count exactly.
    assert first["prompt_tokens"] == compare["input_tokens_max"]
    assert first["completion_tokens"] == again["completion_tokens"] == completion_tokens("metered-w")
    assert again["prompt_tokens"] <= repair["input_tokens_max"]
    assert estimate["cost_usd"]["low"] <= answer["usage"]["cost_usd"] <= estimate["cost_usd"]["high"]
    assert TEXTS["metered-w"] in json.dumps(answer["synthesis"])
