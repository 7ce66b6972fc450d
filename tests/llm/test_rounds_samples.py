"""Refinement rounds and samples (ultrai_llm/layers.py) over the real litellm path, against the fake
provider on loopback: the calls made, what each round is shown, the samples' parameters and cache
entries, the limits, and the virtual ``ultrai/rounds-*`` and ``ultrai/samples-*`` models."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from openai import AsyncOpenAI
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.fakes.openai_server import FakeOpenAI, Received
from tests.llm.conftest import parse_sse, unique
from tools.stack import Stack

pytestmark = pytest.mark.e2e
ORCHESTRATE = "/api/v1/llm/orchestrate"
# What marks each stage's request (ultrai_llm/prompts.py).
REFINE_MARK = "Use them as material for a better answer of your own"
REVIEW_MARK = "Revised answer:"
SYNTHESIS_MARK = "Write the single best answer"


def stage_of(call: Received) -> str:
    last = call.body["messages"][-1]["content"]
    for mark, stage in ((REFINE_MARK, "refine"), (REVIEW_MARK, "review"), (SYNTHESIS_MARK, "synthesis")):
        if mark in last:
            return stage
    return "answer"


def planned(fake: FakeOpenAI) -> Counter[tuple[str, str]]:
    """Every request the fake received, counted per model and stage."""
    return Counter((call.model, stage_of(call)) for call in fake.calls())


def of(body: dict[str, Any], stage: str, number: int | None = None) -> list[dict[str, Any]]:
    return [r for r in body["results"] if r["stage"] == stage and (number is None or r.get("round") == number)]


async def test_rounds_make_the_planned_calls_and_show_every_answer_anonymised(gateway, fake_provider: FakeOpenAI):
    texts = {"alpha": "Lyon is the capital.", "beta": "Paris is the capital.", "gamma": "It is Paris, on the Seine."}
    for model, text in texts.items():
        fake_provider.behave(model, text=text)
    fake_provider.behave("writer", text="Paris.")
    prompt = unique()
    # Without the cache: with these fixed replies round 3 is sent what round 2 was, and the cache
    # would answer it (as it answers any identical request).
    request = {"prompt": prompt, "models": list(texts), "synthesis_model": "writer", "rounds": 3, "cache": False}
    r = await gateway.post(ORCHESTRATE, json=request)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "completed" and body["synthesis"]["text"] == "Paris."
    expected = {(m, "answer"): 1 for m in texts} | {(m, "refine"): 2 for m in texts} | {("writer", "synthesis"): 1}
    assert planned(fake_provider) == Counter(expected)
    assert [(x["stage"], x["round"]) for x in body["results"]] == [("answer", 1)] * 3 + [("refine", 2)] * 3 + [
        ("refine", 3)
    ] * 3
    assert all("sample" not in x for x in body["results"])
    for model in texts:
        round_two = fake_provider.calls(model)[1].body["messages"]
        assert len(round_two) == 1 and round_two[0]["role"] == "user"
        shown = round_two[0]["content"]
        assert prompt in shown and REFINE_MARK in shown
        # Every model's answer of round 1, its own among them, and no model's name.
        assert all(text in shown for text in texts.values())
        assert "Answer 3:" in shown and not any(name in shown for name in texts)
    assert "Answer 3:" in fake_provider.calls("writer")[0].body["messages"][-1]["content"]


async def test_a_round_is_shown_the_round_before_it(gateway, fake_provider: FakeOpenAI):
    """With replies that depend on what a model is sent, each round's answers differ: round 3 is
    shown round 2's answers, not round 1's, and the synthesis the last round's."""
    r = await gateway.post(
        ORCHESTRATE, json={"prompt": unique(), "models": ["alpha", "beta"], "synthesis_model": "writer", "rounds": 3}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    first, second, third = (
        [x["text"] for x in of(body, s, n)] for s, n in (("answer", 1), ("refine", 2), ("refine", 3))
    )
    assert len(set(first + second + third)) == 6
    for model in ("alpha", "beta"):
        shown = fake_provider.calls(model)[2].body["messages"][-1]["content"]
        assert all(t in shown for t in second) and not any(t in shown for t in first)
    synthesis = fake_provider.calls("writer")[0].body["messages"][-1]["content"]
    assert all(t in synthesis for t in third) and not any(t in synthesis for t in first + second)


async def test_a_model_failing_in_a_round_is_not_asked_in_the_next(gateway, fake_provider: FakeOpenAI):
    fake_provider.behave("flaky", status=500, retry_after=0.01)
    fake_provider.behave("alpha", text="One answer.")
    fake_provider.behave("beta", text="Another answer.")
    r = await gateway.post(
        ORCHESTRATE, json={"prompt": unique(), "models": ["alpha", "flaky", "beta"], "pattern": "parallel", "rounds": 2}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "partial"
    assert {x["model"] for x in of(body, "refine", 2)} == {"alpha", "beta"}
    counts = planned(fake_provider)
    assert counts[("flaky", "refine")] == 0 and counts[("flaky", "answer")] >= 1  # litellm retries the 500
    assert counts[("alpha", "refine")] == counts[("beta", "refine")] == 1
    shown = fake_provider.calls("alpha")[1].body["messages"][-1]["content"]
    assert "Answer 2:" in shown and "Answer 3:" not in shown


async def test_a_round_nobody_answers_leaves_the_last_good_answers(gateway, fake_provider: FakeOpenAI):
    """Round 1's answer is too long to be shown to the model again within its window (priced: 2000
    tokens): round 2 is refused without a call, round 3 does not run, and the synthesis gets round 1."""
    long_answer = "word " * 2500
    fake_provider.behave("priced", text=long_answer)
    fake_provider.behave("writer", text="Summed up.")
    r = await gateway.post(
        ORCHESTRATE, json={"prompt": unique(), "models": ["priced"], "synthesis_model": "writer", "rounds": 3}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(x["stage"], x["status"]) for x in body["results"]] == [("answer", "ok"), ("refine", "error")]
    assert "room for 2000" in of(body, "refine", 2)[0]["error"]
    assert planned(fake_provider) == Counter({("priced", "answer"): 1, ("writer", "synthesis"): 1})
    assert body["synthesis"]["status"] == "ok"
    assert long_answer.strip() in fake_provider.calls("writer")[0].body["messages"][-1]["content"]


async def test_samples_are_distinct_calls_above_temperature_zero(gateway, fake_provider: FakeOpenAI):
    fake_provider.behave("writer", text="Aggregated.")
    r = await gateway.post(
        ORCHESTRATE,
        json={
            "prompt": unique(),
            "models": ["gamma"],
            "synthesis_model": "writer",
            "samples": 3,
            "params": {"gamma": {"temperature": 0}},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert planned(fake_provider) == Counter({("gamma", "answer"): 3, ("writer", "synthesis"): 1})
    sent = [c.body for c in fake_provider.calls("gamma")]
    assert sorted(b["seed"] for b in sent) == [0, 1, 2] and all(b["temperature"] == 0.7 for b in sent)
    answers = of(body, "answer")
    assert sorted(x["sample"] for x in answers) == [1, 2, 3] and {x["model"] for x in answers} == {"gamma"}
    assert len({x["text"] for x in answers}) == 3
    shown = fake_provider.calls("writer")[0].body["messages"][-1]["content"]
    assert all(x["text"] in shown for x in answers) and "Answer 3:" in shown
    # The synthesis model is not sampled: no seed or temperature of its own.
    assert "seed" not in fake_provider.calls("writer")[0].body
    # A given temperature and seed: kept, and the seeds counted up from it.
    r = await gateway.post(
        ORCHESTRATE,
        json={
            "prompt": unique(),
            "models": ["gamma"],
            "pattern": "parallel",
            "samples": 2,
            "params": {"gamma": {"temperature": 0.3, "seed": 41}},
        },
    )
    assert r.status_code == 200, r.text
    sent = [c.body for c in fake_provider.calls("gamma")[3:]]
    assert sorted(b["seed"] for b in sent) == [41, 42] and all(b["temperature"] == 0.3 for b in sent)


async def test_the_cache_keeps_each_sample_apart(gateway, fake_provider: FakeOpenAI):
    request = {"prompt": unique(), "models": ["delta"], "pattern": "parallel", "samples": 3}
    first = await gateway.post(ORCHESTRATE, json=request)
    assert first.status_code == 200, first.text
    texts = {x["sample"]: x["text"] for x in first.json()["results"]}
    assert len(set(texts.values())) == 3 and len(fake_provider.calls("delta")) == 3
    again = await gateway.post(ORCHESTRATE, json=request)
    results = again.json()["results"]
    # Answered from the cache, sample by sample: no call, and each sample its own answer.
    assert len(fake_provider.calls("delta")) == 3
    assert all(x["cached"] for x in results) and {x["sample"]: x["text"] for x in results} == texts


async def test_rounds_and_samples_with_peer_review_make_the_planned_calls(gateway, fake_provider: FakeOpenAI):
    r = await gateway.post(
        ORCHESTRATE,
        json={"prompt": unique(), "models": ["alpha", "beta"], "pattern": "peer_review", "rounds": 2, "samples": 2},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert planned(fake_provider) == Counter(
        {(m, s): 2 for m in ("alpha", "beta") for s in ("answer", "refine", "review")}
    )
    # Round 2 shows the four answers of round 1; a review shows the three others.
    for call in fake_provider.calls():
        last = call.body["messages"][-1]["content"]
        if stage_of(call) == "refine":
            assert "Answer 4:" in last and "Answer 5:" not in last
        if stage_of(call) == "review":
            assert "Answer C:" in last and "Answer D:" not in last
    labels = sorted((x["stage"], x["model"], x["sample"]) for x in body["results"])
    assert labels == sorted(
        (s, m, i) for s in ("answer", "refine", "review") for m in ("alpha", "beta") for i in (1, 2)
    )


@pytest.mark.parametrize(
    "extra",
    [{"rounds": 0}, {"rounds": 5}, {"samples": 0}, {"samples": 9}, {"rounds": "two"}],
    ids=str,
)
async def test_rounds_and_samples_out_of_bounds_are_422(gateway, fake_provider: FakeOpenAI, extra: dict):
    r = await gateway.post(ORCHESTRATE, json={"prompt": unique(), "models": ["alpha"], **extra})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert next(iter(extra)) in r.text
    assert not fake_provider.calls()


async def test_more_than_32_answers_per_round_is_422(gateway, fake_provider: FakeOpenAI):
    models = ["alpha", "beta", "gamma", "delta", "epsilon"]
    r = await gateway.post(ORCHESTRATE, json={"prompt": unique(), "models": models, "samples": 7})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "At most 32 answers per round" in r.json()["detail"]
    assert not fake_provider.calls()


async def test_rounds_stream_stage_by_stage(gateway, fake_provider: FakeOpenAI):
    fake_provider.behave("stream-a", text="one two three")
    fake_provider.behave("writer", text="the end")
    request = {"prompt": unique(), "models": ["stream-a"], "synthesis_model": "writer", "rounds": 2, "samples": 2}
    async with gateway.stream("POST", ORCHESTRATE, json={**request, "stream": True}) as r:
        assert r.status_code == 200
        events = parse_sse("".join([chunk async for chunk in r.aiter_text()]))
    stages = [(d["stage"], d.get("round")) for e, d in events if e == "stage"]
    assert stages == [("answer", 1), ("refine", 2), ("synthesis", None)]
    deltas = Counter((d["stage"], d.get("round"), d.get("sample")) for e, d in events if e == "delta")
    assert set(deltas) == {
        ("answer", 1, 1),
        ("answer", 1, 2),
        ("refine", 2, 1),
        ("refine", 2, 2),
        ("synthesis", None, None),
    }
    assert deltas[("answer", 1, 1)] > 1  # token by token
    # Round 2 starts after both samples' results of round 1.
    names = [e for e, _ in events]
    assert names[: names.index("stage", 1)].count("result") == 2
    assert events[-1][0] == "done" and events[-1][1]["synthesis"]["text"] == "the end"


async def test_rounds_over_the_websocket(llm_stack: Stack, token: str, fake_provider: FakeOpenAI):
    request = {"prompt": unique(), "models": ["alpha", "beta"], "synthesis_model": "writer", "rounds": 2}
    url = llm_stack.url("gateway").replace("http://", "ws://") + ORCHESTRATE + "/ws"
    events: list[dict[str, Any]] = []
    async with connect(url) as ws:
        await ws.send(json.dumps({"token": token, "request": request}))
        with pytest.raises(ConnectionClosed):
            while True:
                events.append(json.loads(await ws.recv()))
    assert [(e["stage"], e.get("round")) for e in events if e["event"] == "stage"] == [
        ("answer", 1),
        ("refine", 2),
        ("synthesis", None),
    ]
    assert {(e["model"], e["round"]) for e in events if e["event"] == "result" and e["stage"] != "synthesis"} == {
        (m, n) for m in ("alpha", "beta") for n in (1, 2)
    }
    assert events[-1]["event"] == "done" and events[-1]["status"] == "completed"
    assert planned(fake_provider)[("alpha", "refine")] == 1


async def test_each_round_gets_its_share_of_the_time_budget(gateway, fake_provider: FakeOpenAI):
    """Two rounds in 2 s: round 1 may spend at most half of it, so a model that hangs leaves round 2
    its time, and the rounds stop within the budget."""
    fake_provider.behave("hang", hang=True)
    r = await gateway.post(
        ORCHESTRATE,
        json={"prompt": unique(), "models": ["hang", "alpha"], "pattern": "parallel", "rounds": 2, "timeout": 2},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    hung = of(body, "answer")[[x["model"] for x in of(body, "answer")].index("hang")]
    limit = float(hung["error"].removeprefix("timed out after ").removesuffix(" s"))
    assert 0 < limit <= 1.0
    assert [(x["model"], x["status"]) for x in of(body, "refine", 2)] == [("alpha", "ok")]


async def test_a_cancel_starts_no_further_round(llm_stack: Stack, token: str, fake_provider: FakeOpenAI):
    fake_provider.behave("beta", delay=1)
    request = {"prompt": unique(), "models": ["alpha", "beta"], "synthesis_model": "writer", "rounds": 3}
    url = llm_stack.url("gateway").replace("http://", "ws://") + ORCHESTRATE + "/ws"
    events: list[dict[str, Any]] = []
    async with connect(url) as ws:
        await ws.send(json.dumps({"token": token, "request": request}))
        with pytest.raises(ConnectionClosed):
            while True:
                events.append(json.loads(await ws.recv()))
                if events[-1]["event"] == "stage" and events[-1]["stage"] == "refine":
                    await ws.send(json.dumps({"type": "cancel"}))
    assert [(e["stage"], e.get("round")) for e in events if e["event"] == "stage"] == [("answer", 1), ("refine", 2)]
    assert events[-1]["event"] == "cancelled" and events[-1]["synthesis"] is None
    counts = planned(fake_provider)
    assert counts[("alpha", "answer")] == counts[("beta", "answer")] == 1
    # Round 2's calls may have started before the cancel came; round 3 and the synthesis never do.
    assert counts[("alpha", "refine")] <= 1 and counts[("beta", "refine")] <= 1 and not fake_provider.calls("writer")


@pytest.fixture
async def sdk(llm_stack, token):
    client = AsyncOpenAI(base_url=llm_stack.url("gateway") + "/v1", api_key=token, max_retries=0, timeout=30)
    yield client
    await client.close()


async def test_the_virtual_models_are_listed(sdk: AsyncOpenAI, gateway):
    ids = [m.id async for m in sdk.models.list()]
    for name in ("ultrai/rounds-2", "ultrai/rounds-3", "ultrai/samples-3", "ultrai/samples-5", "ultrai/synthesis"):
        assert name in ids
    patterns = (await gateway.get("/api/v1/llm/models")).json()["patterns"]
    assert "ultrai/rounds-2" in patterns and "ultrai/samples-3" in patterns


async def test_virtual_rounds_model_streams_the_synthesis(sdk: AsyncOpenAI, fake_provider: FakeOpenAI):
    fake_provider.behave("writer", text="Refined twice, then written.")
    extra = {"models": ["alpha", "beta"], "synthesis_model": "writer"}
    stream = await sdk.chat.completions.create(
        model="ultrai/rounds-2", messages=[{"role": "user", "content": unique()}], extra_body=extra, stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Refined twice, then written."
    expected = {(m, s): 1 for m in ("alpha", "beta") for s in ("answer", "refine")} | {("writer", "synthesis"): 1}
    assert planned(fake_provider) == Counter(expected)
    completion = await sdk.chat.completions.create(
        model="ultrai/rounds-3", messages=[{"role": "user", "content": unique()}], extra_body=extra
    )
    assert completion.choices[0].message.content == "Refined twice, then written."
    assert max(x.get("round", 0) for x in completion.model_extra["ultrai"]["results"]) == 3


async def test_virtual_samples_model_samples_one_model(sdk: AsyncOpenAI, fake_provider: FakeOpenAI):
    """Without ``models``, ``ultrai/samples-3`` samples the first default model (alpha here); with
    them, each of them."""
    completion = await sdk.chat.completions.create(
        model="ultrai/samples-3", messages=[{"role": "user", "content": unique()}], temperature=0
    )
    results = completion.model_extra["ultrai"]["results"]
    assert sorted((x["model"], x["sample"]) for x in results) == [("alpha", 1), ("alpha", 2), ("alpha", 3)]
    assert planned(fake_provider) == Counter({("alpha", "answer"): 3, ("alpha", "synthesis"): 1})
    assert {c.body["temperature"] for c in fake_provider.calls("alpha") if stage_of(c) == "answer"} == {0.7}
    fake_provider.reset()
    stream = await sdk.chat.completions.create(
        model="ultrai/samples-5",
        messages=[{"role": "user", "content": unique()}],
        extra_body={"models": ["beta", "gamma"], "synthesis_model": "writer"},
        stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text.startswith("writer answers")
    assert planned(fake_provider) == Counter(
        {("beta", "answer"): 5, ("gamma", "answer"): 5, ("writer", "synthesis"): 1}
    )
