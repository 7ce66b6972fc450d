"""The orchestration patterns over the real litellm path, against the fake provider on loopback."""

from __future__ import annotations

import pytest

from tests.fakes.openai_server import FakeOpenAI, default_reply
from tests.llm.conftest import parse_sse, unique

pytestmark = pytest.mark.e2e
RESULT_KEYS = {
    "model",
    "stage",
    "status",
    "text",
    "error",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "cached",
}


async def test_parallel_every_model_answers_independently(gateway, fake_provider: FakeOpenAI):
    fake_provider.behave("alpha", text="Paris is the capital.")
    fake_provider.behave("beta", text="The capital is Paris.")
    prompt = unique()
    r = await gateway.post(
        "/api/v1/llm/orchestrate", json={"prompt": prompt, "models": ["alpha", "beta"], "pattern": "parallel"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["pattern"] == "parallel" and body["status"] == "completed" and body["synthesis"] is None
    by_model = {x["model"]: x for x in body["results"]}
    assert by_model["alpha"]["text"] == "Paris is the capital."
    assert by_model["beta"]["text"] == "The capital is Paris."
    for result in body["results"]:
        assert set(result) == RESULT_KEYS
        assert result["stage"] == "answer" and result["status"] == "ok" and result["error"] is None
        assert result["prompt_tokens"] > 0 and result["completion_tokens"] > 0
    assert body["usage"]["completion_tokens"] == sum(x["completion_tokens"] for x in body["results"])
    # Each model got the prompt alone, not the others' answers.
    for model in ("alpha", "beta"):
        sent = fake_provider.calls(model)[-1].body["messages"]
        assert sent == [{"role": "user", "content": prompt}]


async def test_context_and_params_reach_the_provider(gateway, fake_provider: FakeOpenAI):
    prompt = unique("What does the contract say about notice?")
    r = await gateway.post(
        "/api/v1/llm/orchestrate",
        json={
            "prompt": prompt,
            "context": ["Clause 4: notice is 30 days.", "Clause 9: law of France."],
            "models": ["gamma"],
            "pattern": "parallel",
            "params": {
                "gamma": {"temperature": 0.1, "max_tokens": 50, "top_p": 0.9, "seed": 7, "system_prompt": "Be brief."}
            },
        },
    )
    assert r.status_code == 200, r.text
    sent = fake_provider.calls("gamma")[-1].body
    assert sent["temperature"] == 0.1 and sent["max_tokens"] == 50 and sent["top_p"] == 0.9 and sent["seed"] == 7
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    user = sent["messages"][1]["content"]
    assert "[1] Clause 4: notice is 30 days." in user and "[2] Clause 9" in user and prompt in user


async def test_synthesis_is_the_default_and_sees_every_answer(gateway, fake_provider: FakeOpenAI):
    fake_provider.behave("alpha", text="Answer one: 42.")
    fake_provider.behave("beta", text="Answer two: forty-two.")
    fake_provider.behave("writer", text="The ultra answer: 42.")
    prompt = unique("What is six times seven?")
    r = await gateway.post(
        "/api/v1/llm/orchestrate", json={"prompt": prompt, "models": ["alpha", "beta"], "synthesis_model": "writer"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["pattern"] == "synthesis" and body["status"] == "completed"
    assert body["synthesis"]["model"] == "writer" and body["synthesis"]["stage"] == "synthesis"
    assert body["synthesis"]["text"] == "The ultra answer: 42."
    sent = fake_provider.calls("writer")[-1].body["messages"][-1]["content"]
    assert "Answer one: 42." in sent and "Answer two: forty-two." in sent and prompt in sent
    # Anonymised: the synthesising model is not told which model said what.
    assert "alpha" not in sent and "beta" not in sent
    totals = body["usage"]
    assert (
        totals["completion_tokens"]
        == sum(x["completion_tokens"] for x in body["results"]) + body["synthesis"]["completion_tokens"]
    )


async def test_peer_review_each_model_critiques_the_others_anonymised(gateway, fake_provider: FakeOpenAI):
    answers = {"reviewer-a": "Mercury is closest.", "reviewer-b": "Venus is closest.", "reviewer-c": "It is Mercury."}
    for model, text in answers.items():
        fake_provider.behave(model, text=text)
    prompt = unique("Which planet is closest to the Sun?")
    r = await gateway.post(
        "/api/v1/llm/orchestrate", json={"prompt": prompt, "models": list(answers), "pattern": "peer_review"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    stages = [(x["model"], x["stage"]) for x in body["results"]]
    assert sorted(stages) == sorted([(m, "answer") for m in answers] + [(m, "review") for m in answers])
    assert body["synthesis"] is None
    for model, own in answers.items():
        review = fake_provider.calls(model)[-1].body["messages"]
        # The model sees its own answer as its turn, then the others' answers, with no model names.
        assert review[0]["content"] == prompt and review[1] == {"role": "assistant", "content": own}
        instruction = review[2]["content"]
        for other, text in answers.items():
            assert (text in instruction) == (other != model)
            assert other not in instruction
        assert "Revised answer" in instruction


async def test_peer_review_with_a_synthesis_model_uses_the_revised_answers(gateway, fake_provider: FakeOpenAI):
    fake_provider.behave("delta", text="Revised answer: water boils at 100 C at sea level.")
    fake_provider.behave("epsilon", text="Revised answer: 100 degrees Celsius.")
    fake_provider.behave("writer", text="Water boils at 100 C.")
    r = await gateway.post(
        "/api/v1/llm/orchestrate",
        json={
            "prompt": unique("Boiling point?"),
            "models": ["delta", "epsilon"],
            "pattern": "peer_review",
            "synthesis_model": "writer",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["synthesis"]["text"] == "Water boils at 100 C."
    assert len([x for x in r.json()["results"] if x["stage"] == "review"]) == 2


async def test_partial_failure_reports_the_error_and_keeps_the_others(gateway, fake_provider: FakeOpenAI):
    fake_provider.behave("alpha", text="Fine.")
    fake_provider.behave("flaky", status=500, retry_after=0.01)
    fake_provider.behave("hang", hang=True)
    fake_provider.behave("writer", text="Synthesised from what arrived.")
    r = await gateway.post(
        "/api/v1/llm/orchestrate",
        json={"prompt": unique(), "models": ["alpha", "flaky", "hang"], "synthesis_model": "writer", "timeout": 2},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "partial"
    by_model = {x["model"]: x for x in body["results"]}
    assert by_model["alpha"]["status"] == "ok"
    assert by_model["flaky"]["status"] == "error" and "500" in by_model["flaky"]["error"]
    assert by_model["hang"]["status"] == "error" and "timed out" in by_model["hang"]["error"]
    assert by_model["flaky"]["text"] is None
    assert body["synthesis"]["status"] == "ok"
    # The synthesis saw only the answer that arrived.
    assert "Fine." in fake_provider.calls("writer")[-1].body["messages"][-1]["content"]
    # litellm's Router retried the 500 (LLM_NUM_RETRIES=1) before giving up.
    assert len(fake_provider.calls("flaky")) >= 2


async def test_every_model_failing_is_a_502_with_each_error(gateway, fake_provider: FakeOpenAI):
    fake_provider.behave("flaky", status=500, retry_after=0.01)
    fake_provider.behave("limited", status=429, retry_after=0.01)
    r = await gateway.post(
        "/api/v1/llm/orchestrate", json={"prompt": unique(), "models": ["flaky", "limited"], "pattern": "parallel"}
    )
    assert r.status_code == 502
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert {x["model"] for x in body["results"]} == {"flaky", "limited"}
    assert all(x["status"] == "error" for x in body["results"])
    assert "429" in {x["model"]: x for x in body["results"]}["limited"]["error"]


async def test_fallback_to_another_model(gateway, fake_provider: FakeOpenAI):
    fake_provider.behave("primary", status=503, retry_after=0.01)
    fake_provider.behave("backup", text="Backup answers.")
    r = await gateway.post(
        "/api/v1/llm/orchestrate", json={"prompt": unique(), "models": ["primary"], "pattern": "parallel"}
    )
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    assert result["model"] == "primary" and result["status"] == "ok" and result["text"] == "Backup answers."
    assert fake_provider.calls("primary") and fake_provider.calls("backup")


async def test_retry_overcomes_a_transient_failure(gateway, fake_provider: FakeOpenAI):
    fake_provider.behave("epsilon", status=429, fails=1, retry_after=0.01)
    r = await gateway.post(
        "/api/v1/llm/orchestrate", json={"prompt": unique(), "models": ["epsilon"], "pattern": "parallel"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["status"] == "ok"


async def test_overall_budget_bounds_a_hanging_model(gateway, fake_provider: FakeOpenAI):
    fake_provider.behave("hang", hang=True)
    fake_provider.behave("beta", text="quick")
    r = await gateway.post(
        "/api/v1/llm/orchestrate",
        json={"prompt": unique(), "models": ["hang", "beta"], "pattern": "parallel", "timeout": 0.5},
    )
    assert r.status_code == 200, r.text
    by_model = {x["model"]: x for x in r.json()["results"]}
    assert "timed out after 0.5 s" in by_model["hang"]["error"]
    assert by_model["beta"]["status"] == "ok"


async def test_streaming_through_the_gateway(gateway, fake_provider: FakeOpenAI):
    fake_provider.behave("stream-a", text="one two three four", chunk_delay=0.01)
    fake_provider.behave("stream-b", text="five six")
    fake_provider.behave("writer", text="the final word")
    async with gateway.stream(
        "POST",
        "/api/v1/llm/orchestrate",
        json={"prompt": unique(), "models": ["stream-a", "stream-b"], "synthesis_model": "writer", "stream": True},
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join([chunk async for chunk in r.aiter_text()])
    events = parse_sse(text)
    names = [e for e, _ in events]
    assert names[0] == "stage" and names[-1] == "done"
    stages = [d["stage"] for e, d in events if e == "stage"]
    assert stages == ["answer", "synthesis"]
    deltas = {}
    for event, data in events:
        if event == "delta":
            deltas.setdefault((data["model"], data["stage"]), []).append(data["text"])
    # Token by token: several deltas for a model, which together make its answer.
    assert len(deltas[("stream-a", "answer")]) > 1
    assert "".join(deltas[("stream-a", "answer")]) == "one two three four"
    assert "".join(deltas[("writer", "synthesis")]) == "the final word"
    # The synthesis stage starts only after both answers' results.
    first_synthesis = names.index("stage", 1)
    assert sum(1 for e, _ in events[:first_synthesis] if e == "result") == 2
    done = events[-1][1]
    assert done["synthesis"]["text"] == "the final word" and done["status"] == "completed"


async def test_streaming_reports_a_broken_stream_as_that_models_error(gateway, fake_provider: FakeOpenAI):
    fake_provider.behave("brittle", text="this answer will break off midway", break_after=2)
    fake_provider.behave("alpha", text="steady")
    async with gateway.stream(
        "POST",
        "/api/v1/llm/orchestrate",
        json={"prompt": unique(), "models": ["brittle", "alpha"], "pattern": "parallel", "stream": True},
    ) as r:
        text = "".join([chunk async for chunk in r.aiter_text()])
    events = parse_sse(text)
    results = {d["model"]: d for e, d in events if e == "result"}
    assert results["brittle"]["status"] == "error" and results["alpha"]["status"] == "ok"
    assert events[-1][0] == "done" and events[-1][1]["status"] == "partial"


async def test_streaming_all_failed_ends_with_an_error_event(gateway, fake_provider: FakeOpenAI):
    fake_provider.behave("flaky", status=500, retry_after=0.01)
    async with gateway.stream(
        "POST",
        "/api/v1/llm/orchestrate",
        json={"prompt": unique(), "models": ["flaky"], "pattern": "parallel", "stream": True},
    ) as r:
        text = "".join([chunk async for chunk in r.aiter_text()])
    events = parse_sse(text)
    assert events[-1][0] == "error" and events[-1][1]["status"] == 502


async def test_unknown_model_and_bad_params_are_422(gateway):
    r = await gateway.post("/api/v1/llm/orchestrate", json={"prompt": "x", "models": ["nope"]})
    assert r.status_code == 422 and "nope" in r.json()["detail"] and "alpha" in r.json()["detail"]
    r = await gateway.post(
        "/api/v1/llm/orchestrate", json={"prompt": "x", "models": ["alpha"], "params": {"alpha": {"temperature": 5}}}
    )
    assert r.status_code == 422 and "temperature" in r.json()["detail"]
    r = await gateway.post(
        "/api/v1/llm/orchestrate", json={"prompt": "x", "models": ["priced"], "params": {"priced": {"max_tokens": 501}}}
    )
    assert r.status_code == 422 and "500" in r.json()["detail"]
    r = await gateway.post("/api/v1/llm/orchestrate", json={"prompt": "x", "models": ["alpha"], "pattern": "vote"})
    assert r.status_code == 422


async def test_a_request_too_long_for_a_model_is_refused_for_that_model(gateway, fake_provider: FakeOpenAI):
    fake_provider.behave("alpha", text="I read it all.")
    long_context = ["word " * 1500, "more " * 1500]  # ~3000 tokens: over priced's window of 2000
    r = await gateway.post(
        "/api/v1/llm/orchestrate",
        json={"prompt": unique(), "context": long_context, "models": ["priced", "alpha"], "pattern": "parallel"},
    )
    assert r.status_code == 200, r.text
    by_model = {x["model"]: x for x in r.json()["results"]}
    assert by_model["priced"]["status"] == "error" and "2000" in by_model["priced"]["error"]
    assert by_model["alpha"]["status"] == "ok"
    before = len(fake_provider.calls("priced"))
    # Truncation by policy: context chunks dropped from the end until it fits.
    r = await gateway.post(
        "/api/v1/llm/orchestrate",
        json={
            "prompt": unique(),
            "context": long_context,
            "models": ["priced"],
            "pattern": "parallel",
            "truncate": True,
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["status"] == "ok"
    sent = fake_provider.calls("priced")[before:][-1].body["messages"][-1]["content"]
    assert "[1] word" in sent and "[2] more" not in sent


async def test_unauthenticated_calls_are_401(llm_stack):
    import httpx

    async with httpx.AsyncClient(base_url=llm_stack.url("gateway")) as client:
        r = await client.post("/api/v1/llm/orchestrate", json={"prompt": "x"})
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = await client.get("/v1/models", headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 401


async def test_models_lists_provider_status_and_context_window(gateway):
    r = await gateway.get("/api/v1/llm/models")
    assert r.status_code == 200
    models = {m["name"]: m for m in r.json()["models"]}
    assert models["priced"]["context_window"] == 2000 and models["priced"]["provider"] == "openai"
    assert models["alpha"]["status"] in ("available", "cooling_down")
    assert "ultrai/synthesis" in r.json()["patterns"]


def test_default_reply_differs_per_prompt():
    first = default_reply("m", [{"role": "user", "content": "a"}])
    assert first != default_reply("m", [{"role": "user", "content": "b"}])


async def test_the_synthesis_is_checked_against_its_models_window_too(gateway, fake_provider: FakeOpenAI):
    fake_provider.behave("alpha", text="Short answer.")
    fake_provider.behave("priced", text="Synthesis.")
    context = ["word " * 1500, "more " * 1500]  # fits alpha (no known limit), not priced (2000)
    body = {"prompt": unique(), "context": context, "models": ["alpha"], "synthesis_model": "priced"}
    before = len(fake_provider.calls("priced"))
    r = await gateway.post("/api/v1/llm/orchestrate", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["status"] == "partial" and answer["results"][0]["status"] == "ok"
    assert answer["synthesis"]["status"] == "error" and "room for 2000" in answer["synthesis"]["error"]
    assert len(fake_provider.calls("priced")) == before  # refused without a call
    r = await gateway.post("/api/v1/llm/orchestrate", json={**body, "truncate": True})
    assert r.json()["synthesis"]["status"] == "ok"
    sent = fake_provider.calls("priced")[-1].body["messages"][-1]["content"]
    assert "[1] word" in sent and "[2] more" not in sent and "Short answer." in sent
