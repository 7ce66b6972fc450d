"""The estimate before any call (``POST /api/v1/llm/orchestrate/estimate``) against what the run then
costs, with the fake provider counting tokens the way litellm's token counter does; and the budget
check that refuses an orchestration over budget before its first call (HTTP, the ultrai/* virtual
models, the WebSocket)."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.fakes.openai_server import FakeOpenAI, litellm_usage
from tests.llm.conftest import LLM_ENV, METERED, METERED_MAX_OUTPUT, MODELS, keys_fetched, unique, write_models_file
from tests.support.keys import new_key
from tests.support.users import bearer, new_access_token
from ultrai_llm.schemas import EstimateResponse

pytestmark = pytest.mark.e2e
ESTIMATE = "/api/v1/llm/orchestrate/estimate"
TEXTS = {
    "metered-a": "The notice period is thirty days, per clause four.",
    "metered-b": "Thirty days' notice, under clause 4 of the contract.",
    "metered-w": "Notice: thirty days (clause 4).",
}


def completion_tokens(model: str) -> int:
    return litellm_usage(model, [{"role": "user", "content": "x"}], TEXTS[model])["completion_tokens"]


def counted(fake: FakeOpenAI) -> None:
    for model, text in TEXTS.items():
        fake.behave(model, text=text, count_tokens=True)


async def test_the_estimate_equals_the_usage_of_the_run(gateway, fake_provider: FakeOpenAI):
    counted(fake_provider)
    # max_tokens at each reply's exact length: the high end is what the run costs.
    params = {m: {"max_tokens": completion_tokens(m), "system_prompt": "Be exact."} for m in ("metered-a", "metered-b")}
    body = {
        "prompt": unique("How long is the notice period?"),
        "context": ["Clause 4: either party may end the contract with thirty days' notice.", "Clause 9: French law."],
        "models": ["metered-a", "metered-b"],
        "pattern": "parallel",
        "params": params,
        "cache": False,
    }
    r = await gateway.post(ESTIMATE, json=body)
    assert r.status_code == 200, r.text
    estimate = r.json()
    EstimateResponse.model_validate(estimate)  # the contract, as the OpenAPI document states it
    assert fake_provider.calls() == []  # no provider call at all
    assert estimate["pattern"] == "parallel" and estimate["calls_per_stage"] == {"answer": 2}
    assert estimate["refused"] == {} and estimate["budget"]["fits"] is True

    r = await gateway.post("/api/v1/llm/orchestrate", json=body)
    assert r.status_code == 200, r.text
    actual = {x["model"]: x for x in r.json()["results"]}
    for call in estimate["calls"]:
        run = actual[call["model"]]
        assert call["input_tokens"] == call["input_tokens_max"] == run["prompt_tokens"] > 0
        assert call["output_tokens"] == run["completion_tokens"]
        price_in, _ = METERED[call["model"]]
        assert call["cost_usd_low"] == pytest.approx(run["prompt_tokens"] * price_in, abs=1e-9)
        assert call["cost_usd_high"] == pytest.approx(run["cost_usd"], abs=1e-9)
    assert estimate["input_tokens"]["low"] == r.json()["usage"]["prompt_tokens"]
    assert estimate["cost_usd"]["high"] == pytest.approx(r.json()["usage"]["cost_usd"], abs=1e-9)

    # The run left latencies behind: the next estimate expects a wall time.
    again = (await gateway.post(ESTIMATE, json=body)).json()
    assert again["wall_time_ms"] is not None and again["wall_time_ms"] > 0


async def test_later_stages_equal_the_estimate_when_the_answers_are_as_long_as_estimated(
    gateway, fake_provider: FakeOpenAI
):
    """A later stage's messages hold earlier answers unknown beforehand: its input lies between the
    two counts, and is the high one exactly when every earlier answer is as long as its output
    estimate (here: max_tokens at each reply's exact length). The ranked synthesis also holds the
    aggregate, whose text depends on the rankings: the high count assumes every answer ranked; the
    fake's replies rank nothing, so there it is the low count plus the answers."""
    counted(fake_provider)
    params = {m: {"max_tokens": completion_tokens(m)} for m in TEXTS}
    for pattern, stages in (
        ("synthesis", {"answer": 2, "synthesis": 1}),
        ("peer_review", {"answer": 2, "review": 2, "synthesis": 1}),
        ("ranked", {"answer": 2, "review": 2, "synthesis": 1}),
    ):
        body = {
            "prompt": unique("Notice?"),
            "models": ["metered-a", "metered-b"],
            "synthesis_model": "metered-w",
            "pattern": pattern,
            "params": params,
            "cache": False,
        }
        estimate = (await gateway.post(ESTIMATE, json=body)).json()
        assert estimate["calls_per_stage"] == stages, pattern
        r = await gateway.post("/api/v1/llm/orchestrate", json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        runs = answer["results"] + [answer["synthesis"]]
        outputs = {c["model"]: c["output_tokens"] for c in estimate["calls"] if c["stage"] == "answer"}
        for call in estimate["calls"]:
            run = next(x for x in runs if x["model"] == call["model"] and x["stage"] == call["stage"])
            assert call["input_tokens"] <= run["prompt_tokens"] <= call["input_tokens_max"], (pattern, call, run)
            assert run["completion_tokens"] == call["output_tokens"]
            if pattern == "ranked" and call["stage"] == "synthesis":
                assert answer["ranking"]["left_out"] == ["metered-a", "metered-b"]
                assert run["prompt_tokens"] == call["input_tokens"] + sum(outputs.values()) < call["input_tokens_max"]
            else:
                assert run["prompt_tokens"] == call["input_tokens_max"], (pattern, call, run)
            if call["stage"] == "answer":
                assert call["input_tokens"] == run["prompt_tokens"]
        assert estimate["cost_usd"]["low"] <= answer["usage"]["cost_usd"] <= estimate["cost_usd"]["high"]
        if pattern != "ranked":
            assert estimate["cost_usd"]["high"] == pytest.approx(answer["usage"]["cost_usd"], abs=1e-9)


async def test_rounds_and_samples_are_in_the_estimate_call_for_call(gateway, fake_provider: FakeOpenAI):
    """Refinement rounds and samples are planned call for call: each refine call's input holds every
    answer of the round before (the high count when they are as long as estimated), and the wall
    time adds the rounds one after the other."""
    counted(fake_provider)
    params = {m: {"max_tokens": completion_tokens(m)} for m in TEXTS}
    body = {
        "prompt": unique("Rounds?"),
        "models": ["metered-a", "metered-b"],
        "synthesis_model": "metered-w",
        "rounds": 3,
        "samples": 2,
        "params": params,
        "cache": False,
    }
    estimate = (await gateway.post(ESTIMATE, json=body)).json()
    assert estimate["calls_per_stage"] == {"answer": 4, "refine": 8, "synthesis": 1}
    assert sorted(c["round"] for c in estimate["calls"] if c["stage"] == "refine") == [2] * 4 + [3] * 4
    r = await gateway.post("/api/v1/llm/orchestrate", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    runs = answer["results"] + [answer["synthesis"]]

    def key(call: dict) -> tuple:
        return call["model"], call["stage"], call.get("round") if call["stage"] == "refine" else None

    planned: dict[tuple, list[int]] = {}
    made: dict[tuple, list[int]] = {}
    for call in estimate["calls"]:
        planned.setdefault(key(call), []).append(call["input_tokens_max"])
    for run in runs:
        made.setdefault(key(run), []).append(run["prompt_tokens"])
    assert {k: sorted(v) for k, v in made.items()} == {k: sorted(v) for k, v in planned.items()}
    assert estimate["cost_usd"]["high"] == pytest.approx(answer["usage"]["cost_usd"], abs=1e-9)


async def test_the_estimate_refuses_what_orchestrate_refuses(gateway, fake_provider: FakeOpenAI):
    for body, status in (
        ({"prompt": "x", "models": ["no-such-model"]}, 422),
        ({"prompt": "x", "models": ["metered-a"], "params": {"metered-b": {}}}, 422),
        (
            {"prompt": "x", "models": ["metered-a"], "params": {"metered-a": {"max_tokens": METERED_MAX_OUTPUT + 1}}},
            422,
        ),
        ({"prompt": "x", "pattern": "nonsense"}, 422),
    ):
        estimate = await gateway.post(ESTIMATE, json=body)
        orchestrate = await gateway.post("/api/v1/llm/orchestrate", json=body)
        assert estimate.status_code == orchestrate.status_code == status, (body, estimate.text)
        assert estimate.headers["content-type"].startswith("application/problem+json")
    # Without max_tokens: the model's output limit from the catalog (here 300, under the cap).
    estimate = (
        await gateway.post(ESTIMATE, json={"prompt": "x", "models": ["metered-a"], "pattern": "parallel"})
    ).json()
    assert estimate["calls"][0]["output_tokens"] == METERED_MAX_OUTPUT
    assert fake_provider.calls() == []


async def test_over_budget_is_refused_before_any_call(make_stack, fake_provider: FakeOpenAI, tmp_dir):
    models_file = write_models_file(fake_provider, tmp_dir / "models.json", MODELS)
    st = await make_stack(
        ("auth", "llm", "gateway"), {**LLM_ENV, "LLM_MODELS_FILE": str(models_file), "LLM_BUDGET_USD_PER_DAY": "0.001"}
    )
    counted(fake_provider)
    token = await new_access_token(st.url("gateway"))
    await keys_fetched(st.url("llm"), token)
    auth = {"Authorization": f"Bearer {token}"}
    # Two models at 300 output tokens each: up to ~$0.0023, over the $0.001 budget.
    big = {"prompt": unique(), "models": ["metered-a", "metered-b"], "pattern": "parallel", "cache": False}
    async with httpx.AsyncClient(base_url=st.url("gateway"), headers=auth, timeout=30) as client:
        estimate = (await client.post(ESTIMATE, json=big)).json()
        assert estimate["wall_time_ms"] is None  # a fresh service: no recent latency
        budget = estimate["budget"]
        assert budget["usd_per_day"] == 0.001 and budget["remaining_usd"] == 0.001 and budget["fits"] is False
        high = estimate["cost_usd"]["high"]
        assert high > 0.001 and budget["over_by_usd"] == pytest.approx(high - 0.001, abs=1e-6)

        r = await client.post("/api/v1/llm/orchestrate", json=big)
        assert r.status_code == 402, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        problem = r.json()
        assert problem["over_by_usd"] == budget["over_by_usd"] and problem["estimated_cost_usd"] == high
        assert f"${high:.6f}" in problem["detail"] and f"${budget['over_by_usd']:.6f} over" in problem["detail"]

        chat = {
            "model": "ultrai/parallel",
            "messages": [{"role": "user", "content": unique()}],
            "models": ["metered-a", "metered-b"],
            "cache": False,
        }
        r = await client.post("/v1/chat/completions", json=chat)
        assert r.status_code == 402 and r.json()["error"]["code"] == "over_budget"

        ws_url = st.url("llm").replace("http://", "ws://") + "/api/v1/llm/orchestrate/ws"
        async with connect(ws_url) as ws:
            await ws.send(json.dumps({"token": token, "request": big}))
            event = json.loads(await ws.recv())
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert event["event"] == "error" and event["status"] == 402 and event["over_by_usd"] == budget["over_by_usd"]
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4402
        assert fake_provider.calls() == []  # not one call was made

        # Small enough (max_tokens 5 each) it fits, and runs.
        small = {**big, "params": {m: {"max_tokens": 5} for m in ("metered-a", "metered-b")}}
        fitting = (await client.post(ESTIMATE, json=small)).json()
        assert fitting["budget"]["fits"] is True and fitting["budget"]["over_by_usd"] is None
        fake_provider.behave("metered-a", text="five", count_tokens=True)
        fake_provider.behave("metered-b", text="six", count_tokens=True)
        r = await client.post("/api/v1/llm/orchestrate", json=small)
        assert r.status_code == 200, r.text
        spent = r.json()["usage"]["cost_usd"]
        left = (await client.post(ESTIMATE, json=small)).json()["budget"]["remaining_usd"]
        assert left == pytest.approx(0.001 - spent, abs=1e-8)


async def test_an_api_keys_budget_counts_too(llm_stack, token, fake_provider: FakeOpenAI):
    """No user budget here: the key's own daily budget is what the estimate is held against."""
    counted(fake_provider)
    key = (await new_key(llm_stack.url("gateway"), token, scopes=["llm"], budget_usd=0.001))["key"]
    big = {"prompt": unique(), "models": ["metered-a", "metered-b"], "pattern": "parallel", "cache": False}
    async with httpx.AsyncClient(base_url=llm_stack.url("gateway"), headers=bearer(key), timeout=30) as client:
        estimate = (await client.post(ESTIMATE, json=big)).json()
        budget = estimate["budget"]
        assert budget["usd_per_day"] is None and budget["key_usd_per_day"] == 0.001
        assert budget["remaining_usd"] == 0.001 and budget["fits"] is False
        r = await client.post("/api/v1/llm/orchestrate", json=big)
        assert r.status_code == 402 and r.json()["over_by_usd"] == budget["over_by_usd"]
        assert fake_provider.calls() == []
        # The same request with the user's token (no budget): it fits.
        mine = (await client.post(ESTIMATE, json=big, headers=bearer(token))).json()["budget"]
        assert mine["remaining_usd"] is None and mine["fits"] is True
