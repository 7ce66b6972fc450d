"""An analysis' estimate (``POST .../analyses/estimate``) among the real processes: the documents
service asks the llm service's estimate for each orchestration the analysis would make, and the
fake provider, counting tokens the way litellm's token counter does, shows that the analysis then
uses what was estimated; over budget, the estimate says so and starting the analysis is refused
with 402 before any call."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import running_stack, stack_env
from tests.fakes.openai_server import FakeOpenAI, litellm_usage
from tests.support.keys import new_key
from tests.support.users import bearer, new_access_token
from tools.stack import Stack
from ultrai_documents.schemas import AnalysisEstimate

pytestmark = pytest.mark.e2e

API = "/api/v1/documents"
BUDGET_USD = 0.05
TEXTS = {
    "est-a": "The report says revenue grew by ten percent.",
    "est-b": "Revenue grew ten percent, the report says.",
    "est-synth": "Both agree: revenue grew by ten percent.",
    "est-map": "Notes: the expedition crossed the valley.",
    "est-pricey": "Expensive words.",
}
# (input, output) USD per token. est-pricey's input alone is over the budget for any document.
PRICES = {
    "est-a": (0.0000011, 0.0000031),
    "est-b": (0.0000023, 0.0000047),
    "est-synth": (0.0000005, 0.0000015),
    "est-map": (0.0000007, 0.0000009),
    "est-pricey": (0.001, 0.002),
}
MAP_MAX_OUTPUT = 60  # est-map's output estimate: its notes are shorter


def reply_tokens(model: str) -> int:
    return litellm_usage(model, [{"role": "user", "content": "x"}], TEXTS[model])["completion_tokens"]


@pytest.fixture(scope="module")
async def est_stack(pg_databases, redis_url, fake_provider: FakeOpenAI) -> AsyncIterator[Stack]:
    def models(workdir: Path) -> dict[str, str]:
        entries = []
        for name, (price_in, price_out) in PRICES.items():
            entry = fake_provider.model_entry(name)
            # The output estimate of a model is its output limit: here the exact length of its reply
            # (est-map's notes: an upper bound), so the high end is what the run costs.
            out = MAP_MAX_OUTPUT if name == "est-map" else reply_tokens(name)
            entry["model_info"] = {
                "input_cost_per_token": price_in,
                "output_cost_per_token": price_out,
                "max_output_tokens": out,
            }
            entries.append(entry)
        models_file = workdir / "models.json"
        models_file.write_text(json.dumps({"model_list": entries}))
        return {"LLM_MODELS_FILE": str(models_file)}

    env = {
        **await stack_env(pg_databases, redis_url, "docest"),
        "LLM_NUM_RETRIES": "0",
        "LLM_TIMEOUT": "10",
        "LLM_ALLOWED_FAILS": "100",
        "ENABLE_CACHE": "false",
        "LLM_BUDGET_USD_PER_DAY": str(BUDGET_USD),
    }
    documents_env = {"CHUNK_TOKENS": "200", "CHUNK_OVERLAP_TOKENS": "20", "ANALYSIS_CONTEXT_TOKENS": "400"}
    async with running_stack(env, per_service_env={"documents": documents_env}, files=models) as st:
        yield st


async def _client(st: Stack) -> httpx.AsyncClient:
    headers = bearer(await new_access_token(st.url("gateway"), "docest"))
    return httpx.AsyncClient(base_url=st.url("gateway"), headers=headers, timeout=60)


@pytest.fixture
async def gateway(est_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(est_stack) as client:
        yield client


def _counted(fake: FakeOpenAI) -> None:
    for model, text in TEXTS.items():
        fake.behave(model, text=text, count_tokens=True)


async def _upload(client: httpx.AsyncClient, text: str, name: str) -> dict[str, Any]:
    resp = await client.post(API, files={"file": (name, text.encode(), "text/plain")})
    assert resp.status_code == 201, resp.text
    return resp.json()


async def _finished(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """The analysis once it has ended (its event stream ends with its final event)."""
    async with client.stream("GET", url + "/events") as resp:
        assert resp.status_code == 200
        async for _ in resp.aiter_lines():
            pass
    return (await client.get(url)).json()


async def test_the_estimate_is_what_a_short_documents_analysis_uses(
    gateway: httpx.AsyncClient, fake_provider: FakeOpenAI
) -> None:
    _counted(fake_provider)
    doc = await _upload(gateway, "Quarterly report. Revenue grew by ten percent; costs were flat.", "q.txt")
    body = {"kind": "qa", "question": "How much did revenue grow?", "models": ["est-a", "est-b"]}
    r = await gateway.post(f"{API}/{doc['id']}/analyses/estimate", json=body)
    assert r.status_code == 200, r.text
    estimate = r.json()
    AnalysisEstimate.model_validate(estimate)
    assert fake_provider.calls() == []  # no provider call
    assert (await gateway.get(f"{API}/{doc['id']}/analyses")).json() == []  # nothing stored
    assert estimate["map_reduce"] is None
    assert estimate["orchestrations"] == 2 and estimate["orchestrations_per_step"] == {"answer": 2}
    assert estimate["calls"] == 2 and estimate["refused"] == {}
    budget = estimate["budget"]
    assert budget["usd_per_day"] == BUDGET_USD and budget["remaining_usd"] == BUDGET_USD and budget["fits"] is True
    # Every call's input is known: low and high are the same.
    assert estimate["input_tokens"]["low"] == estimate["input_tokens"]["high"]

    r = await gateway.post(f"{API}/{doc['id']}/analyses", json=body)
    assert r.status_code == 202, r.text
    final = await _finished(gateway, r.headers["location"])
    assert final["status"] == "completed", final
    assert len(fake_provider.calls()) == estimate["calls"]
    assert final["prompt_tokens"] == estimate["input_tokens"]["low"]
    assert final["completion_tokens"] == estimate["output_tokens"]
    assert final["cost_usd"] == pytest.approx(estimate["cost_usd"]["high"], rel=1e-6)

    # Now the llm service knows the models' latencies, and the day's spending.
    again = (await gateway.post(f"{API}/{doc['id']}/analyses/estimate", json={**body, "fresh": True})).json()
    assert again["wall_time_ms"] is not None and again["wall_time_ms"] > 0
    assert again["budget"]["remaining_usd"] == pytest.approx(BUDGET_USD - final["cost_usd"], abs=1e-6)


async def test_a_synthesis_is_planned_over_the_models_answers(
    gateway: httpx.AsyncClient, fake_provider: FakeOpenAI
) -> None:
    _counted(fake_provider)
    doc = await _upload(gateway, "Minutes. The board approved the budget and the new office lease.", "m.txt")
    body = {"kind": "summary", "models": ["est-a", "est-b"], "synthesis_model": "est-synth"}
    estimate = (await gateway.post(f"{API}/{doc['id']}/analyses/estimate", json=body)).json()
    assert estimate["orchestrations_per_step"] == {"answer": 2, "synthesis": 1} and estimate["calls"] == 3
    # The synthesis reads the answers: counted empty (low), at their output estimate (high).
    assert estimate["input_tokens"]["high"] - estimate["input_tokens"]["low"] == reply_tokens("est-a") + reply_tokens(
        "est-b"
    )
    assert estimate["cost_usd"]["low"] < estimate["cost_usd"]["high"]

    r = await gateway.post(f"{API}/{doc['id']}/analyses", json=body)
    final = await _finished(gateway, r.headers["location"])
    assert final["status"] == "completed", final
    assert len(fake_provider.calls()) == 3
    assert estimate["input_tokens"]["low"] < final["prompt_tokens"] <= estimate["input_tokens"]["high"]
    assert final["completion_tokens"] == estimate["output_tokens"]
    assert estimate["cost_usd"]["low"] < final["cost_usd"] <= estimate["cost_usd"]["high"] * (1 + 1e-6)


async def test_a_long_documents_map_reduce_plan_is_counted(
    gateway: httpx.AsyncClient, fake_provider: FakeOpenAI
) -> None:
    _counted(fake_provider)
    text = "\n\n".join(f"Chapter {i}. " + "The expedition crossed the valley and made camp. " * 10 for i in range(12))
    doc = await _upload(gateway, text, "long.txt")
    chunks = doc["chunk_count"]
    assert chunks > 3
    body = {"kind": "extract", "fields": ["destination"], "models": ["est-map"]}
    estimate = (await gateway.post(f"{API}/{doc['id']}/analyses/estimate", json=body)).json()
    assert fake_provider.calls() == []
    assert estimate["map_reduce"] == {"chunks": chunks}
    assert estimate["orchestrations_per_step"] == {"map": chunks, "reduce": 1}
    assert estimate["orchestrations"] == estimate["calls"] == chunks + 1
    # The reduce reads every note: at most MAP_MAX_OUTPUT tokens each.
    assert estimate["input_tokens"]["high"] - estimate["input_tokens"]["low"] == chunks * MAP_MAX_OUTPUT

    r = await gateway.post(f"{API}/{doc['id']}/analyses", json=body)
    final = await _finished(gateway, r.headers["location"])
    assert final["status"] == "completed", final
    assert final["result"]["map_reduce"] == {"chunks": chunks}
    assert len(fake_provider.calls("est-map")) == estimate["calls"]
    # The map calls' inputs are exact; the reduce reads the notes, shorter than their estimate.
    maps = [c for c in fake_provider.calls("est-map") if "This is part" in json.dumps(c.body["messages"])]
    assert len(maps) == chunks
    assert estimate["input_tokens"]["low"] < final["prompt_tokens"] <= estimate["input_tokens"]["high"]
    assert final["cost_usd"] <= estimate["cost_usd"]["high"]


async def test_over_budget_the_estimate_says_so_and_the_start_is_refused_before_any_call(
    gateway: httpx.AsyncClient, fake_provider: FakeOpenAI
) -> None:
    _counted(fake_provider)
    doc = await _upload(gateway, "A short contract. Either party may end it with thirty days' notice.", "c.txt")
    body = {"kind": "summary", "models": ["est-a", "est-pricey"]}
    r = await gateway.post(f"{API}/{doc['id']}/analyses/estimate", json=body)
    assert r.status_code == 200, r.text
    estimate = r.json()
    budget = estimate["budget"]
    assert budget["fits"] is False and budget["remaining_usd"] == BUDGET_USD
    assert estimate["cost_usd"]["high"] > BUDGET_USD
    assert budget["over_by_usd"] == pytest.approx(estimate["cost_usd"]["high"] - BUDGET_USD, abs=1e-6)

    r = await gateway.post(f"{API}/{doc['id']}/analyses", json=body)
    assert r.status_code == 402, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["over_by_usd"] == budget["over_by_usd"]
    assert problem["estimated_cost_usd"] == estimate["cost_usd"]["high"]
    assert f"${budget['over_by_usd']:.6f} over" in problem["detail"]
    assert fake_provider.calls() == []  # not one call, for either model
    assert (await gateway.get(f"{API}/{doc['id']}/analyses")).json() == []  # nothing queued

    # Within the budget, the same document's analysis starts.
    r = await gateway.post(f"{API}/{doc['id']}/analyses", json={"kind": "summary", "models": ["est-a"]})
    assert r.status_code == 202, r.text
    assert (await _finished(gateway, r.headers["location"]))["status"] == "completed"


async def test_the_estimate_is_checked_like_the_start(
    est_stack: Stack, gateway: httpx.AsyncClient, fake_provider: FakeOpenAI
) -> None:
    doc = await _upload(gateway, "Someone's private notes.", "p.txt")
    url = f"{API}/{doc['id']}/analyses/estimate"
    # Another user's document does not exist for this one.
    async with await _client(est_stack) as stranger:
        r = await stranger.post(url, json={"kind": "summary", "models": ["est-a"]})
        assert r.status_code == 404, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    # A body the start refuses, the estimate refuses the same way.
    for bad in (
        {"kind": "qa"},
        {"kind": "summary", "question": "why?"},
        {"kind": "summary", "models": [f"est-{i}" for i in range(9)]},
    ):
        estimate = await gateway.post(url, json=bad)
        start = await gateway.post(f"{API}/{doc['id']}/analyses", json=bad)
        assert estimate.status_code == start.status_code == 422, (bad, estimate.text)
        assert estimate.headers["content-type"].startswith("application/problem+json")
    # The llm service's own refusal (a model it does not know) is passed on.
    r = await gateway.post(url, json={"kind": "summary", "models": ["est-unknown"]})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "est-unknown" in r.json()["detail"]
    assert fake_provider.calls() == []


async def test_with_an_api_key_the_keys_budget_counts(est_stack: Stack, fake_provider: FakeOpenAI) -> None:
    """The estimate is asked as the key the analysis' calls would be made as: its budget counts."""
    _counted(fake_provider)
    token = await new_access_token(est_stack.url("gateway"), "docest")
    key = await new_key(est_stack.url("gateway"), token, budget_usd=0.000001)
    async with httpx.AsyncClient(base_url=est_stack.url("gateway"), headers=bearer(key["key"]), timeout=60) as client:
        doc = await _upload(client, "A memo. The meeting moved to Thursday at noon.", "k.txt")
        body = {"kind": "summary", "models": ["est-a"]}
        estimate = (await client.post(f"{API}/{doc['id']}/analyses/estimate", json=body)).json()
        budget = estimate["budget"]
        assert budget["key_usd_per_day"] == 0.000001 and budget["remaining_usd"] == 0.000001
        assert budget["fits"] is False
        r = await client.post(f"{API}/{doc['id']}/analyses", json=body)
        assert r.status_code == 402, r.text
    # The same analysis as the account (no key): within the account's budget.
    async with httpx.AsyncClient(base_url=est_stack.url("gateway"), headers=bearer(token), timeout=60) as client:
        estimate = (await client.post(f"{API}/{doc['id']}/analyses/estimate", json=body)).json()
        assert estimate["budget"]["key_usd_per_day"] is None and estimate["budget"]["fits"] is True
    assert fake_provider.calls() == []
