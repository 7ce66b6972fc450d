"""The response cache (hit, bypass, Redis unreachable), usage per user and model, budgets, and a
service with no provider configured."""

from __future__ import annotations

import os
import re
import socket

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.llm.conftest import (
    LLM_ENV,
    MODELS,
    PRICE_IN,
    PRICE_OUT,
    keys_fetched,
    unique,
    write_models_file,
)
from tests.support.users import new_access_token

pytestmark = pytest.mark.e2e


def counter(metrics: str, result: str) -> float:
    pattern = rf'cache_requests_total\{{cache="responses",result="{result}",service="llm"\}} ([0-9.e+]+)'
    match = re.search(pattern, metrics)
    return float(match.group(1)) if match else 0.0


async def chat(client: httpx.AsyncClient, model: str, prompt: str, **extra) -> dict:
    r = await client.post(
        "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": prompt}], **extra}
    )
    assert r.status_code == 200, r.text
    return r.json()


async def test_identical_requests_are_answered_from_the_cache(llm, fake_provider: FakeOpenAI):
    fake_provider.behave("sonic", text="cached text")
    prompt = unique()
    before = (await llm.get("/metrics")).text
    first = await chat(llm, "sonic", prompt, temperature=0)
    second = await chat(llm, "sonic", prompt, temperature=0)
    assert first["ultrai"]["cached"] is False and second["ultrai"]["cached"] is True
    assert second["choices"][0]["message"]["content"] == "cached text"
    assert second["usage"] == first["usage"]
    assert len([c for c in fake_provider.calls("sonic") if c.body["messages"][-1]["content"] == prompt]) == 1
    # Other parameters are another request.
    third = await chat(llm, "sonic", prompt, temperature=0.5)
    assert third["ultrai"]["cached"] is False
    after = (await llm.get("/metrics")).text
    assert counter(after, "hit") >= counter(before, "hit") + 1
    assert counter(after, "miss") >= counter(before, "miss") + 2


async def test_cache_entries_are_kept_per_user(llm_stack, llm, fake_provider: FakeOpenAI):
    prompt = unique()
    await chat(llm, "sonic", prompt)
    assert (await chat(llm, "sonic", prompt))["ultrai"]["cached"] is True
    other = await new_access_token(llm_stack.url("gateway"))
    async with httpx.AsyncClient(
        base_url=llm_stack.url("llm"), headers={"Authorization": f"Bearer {other}"}, timeout=30
    ) as client:
        # The same prompt from someone else is not answered from the first user's entry (which would
        # tell them that somebody had asked it).
        assert (await chat(client, "sonic", prompt))["ultrai"]["cached"] is False


async def test_the_cache_can_be_bypassed(llm, fake_provider: FakeOpenAI):
    prompt = unique()
    await chat(llm, "sonic", prompt)
    bypassed = await chat(llm, "sonic", prompt, cache=False)
    assert bypassed["ultrai"]["cached"] is False
    assert len([c for c in fake_provider.calls("sonic") if c.body["messages"][-1]["content"] == prompt]) == 2
    assert counter((await llm.get("/metrics")).text, "bypass") >= 1


async def test_orchestration_results_come_from_the_cache_too(gateway, fake_provider: FakeOpenAI):
    body = {"prompt": unique(), "models": ["sonic", "alpha"], "pattern": "parallel"}
    first = (await gateway.post("/api/v1/llm/orchestrate", json=body)).json()
    second = (await gateway.post("/api/v1/llm/orchestrate", json=body)).json()
    assert [r["cached"] for r in first["results"]] == [False, False]
    assert [r["cached"] for r in second["results"]] == [True, True]
    assert [r["text"] for r in second["results"]] == [r["text"] for r in first["results"]]
    assert second["usage"]["cost_usd"] == 0
    third = (await gateway.post("/api/v1/llm/orchestrate", json={**body, "cache": False})).json()
    assert [r["cached"] for r in third["results"]] == [False, False]


async def test_usage_is_recorded_per_user_and_model(llm_stack, gateway, fake_provider: FakeOpenAI):
    fake_provider.behave("priced", text="four words of answer", prompt_tokens=100, completion_tokens=40)
    before = (await gateway.get("/api/v1/llm/usage")).json()
    old = {m["model"]: m for m in before["models"]}.get("priced", {"requests": 0, "cost_usd": 0.0, "cached": 0})
    prompt = unique()
    await chat(gateway, "priced", prompt)
    await chat(gateway, "priced", prompt)  # a cache hit: tokens counted, no cost
    r = await gateway.get("/api/v1/llm/usage")
    assert r.status_code == 200, r.text
    usage = r.json()
    priced = {m["model"]: m for m in usage["models"]}["priced"]
    assert priced["requests"] == old["requests"] + 2
    assert priced["cached"] == old["cached"] + 1
    assert priced["cost_usd"] == pytest.approx(old["cost_usd"] + 100 * PRICE_IN + 40 * PRICE_OUT)
    assert usage["total"]["cost_usd"] >= priced["cost_usd"]
    assert usage["budget"]["usd_per_day"] is None
    # Another user sees only their own usage.
    other = await new_access_token(llm_stack.url("gateway"))
    r = await gateway.get("/api/v1/llm/usage", headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 200 and r.json()["models"] == []


async def test_usage_counts_the_calls_of_a_stream_left_midway(gateway, fake_provider: FakeOpenAI):
    fake_provider.behave("stream-b", text="quick and done", prompt_tokens=5, completion_tokens=3)
    fake_provider.behave("gamma", text="slow", delay=3)

    async def requests_of(model: str) -> int:
        usage = (await gateway.get("/api/v1/llm/usage")).json()
        return {m["model"]: m for m in usage["models"]}.get(model, {"requests": 0})["requests"]

    before = await requests_of("stream-b")
    body = {"prompt": unique(), "models": ["stream-b", "gamma"], "pattern": "parallel", "stream": True}
    async with gateway.stream("POST", "/api/v1/llm/orchestrate", json=body) as r:
        async for line in r.aiter_lines():
            if line == "event: result":
                break  # the client leaves once the first model has answered
    assert await requests_of("stream-b") == before + 1


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is: nothing listens there


async def test_cache_with_redis_unreachable(make_stack, fake_provider: FakeOpenAI, tmp_dir):
    models_file = write_models_file(fake_provider, tmp_dir / "models.json", MODELS)
    st = await make_stack(
        ("auth", "llm", "gateway"),
        {**LLM_ENV, "LLM_MODELS_FILE": str(models_file), "REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0"},
    )
    token = await new_access_token(st.url("gateway"))
    await keys_fetched(st.url("llm"), token)
    async with httpx.AsyncClient(
        base_url=st.url("gateway"), headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        fake_provider.behave("sonic", text="still served")
        prompt = unique()
        first = await chat(client, "sonic", prompt)
        second = await chat(client, "sonic", prompt)
        assert first["choices"][0]["message"]["content"] == "still served"
        # The in-process fallback still caches.
        assert second["ultrai"]["cached"] is True
        health = (await client.get(f"{st.url('llm')}/health")).json()
        assert health["status"] == "warn"
        assert health["checks"]["redis:responseTime"][0]["status"] == "warn"


async def test_budgets_refuse_when_spent(make_stack, fake_provider: FakeOpenAI, tmp_dir):
    models_file = write_models_file(fake_provider, tmp_dir / "models.json", MODELS)
    st = await make_stack(
        ("auth", "llm", "gateway"),
        {
            **LLM_ENV,
            "LLM_MODELS_FILE": str(models_file),
            "LLM_BUDGET_USD_PER_DAY": "0.0001",
            "LLM_BUDGET_TOKENS_PER_DAY": "1000",
        },
    )
    fake_provider.behave("priced", text="paid answer", prompt_tokens=10, completion_tokens=10)  # $0.00006 a call
    fake_provider.behave("alpha", text="free answer", prompt_tokens=600, completion_tokens=1)  # free, but 601 tokens
    spender, talker = await new_access_token(st.url("gateway")), await new_access_token(st.url("gateway"))
    await keys_fetched(st.url("llm"), spender)
    async with httpx.AsyncClient(base_url=st.url("gateway"), timeout=30) as client:
        auth = {"Authorization": f"Bearer {spender}"}
        body = {"model": "priced", "messages": [{"role": "user", "content": "x"}], "cache": False}
        for _ in range(2):
            r = await client.post("/v1/chat/completions", json=body, headers=auth)
            assert r.status_code == 200, (r.text, st.procs["llm"].tail(30))
        r = await client.post("/v1/chat/completions", json=body, headers=auth)
        assert r.status_code == 402 and "budget" in r.json()["detail"] and "retry-after" in r.headers
        r = await client.post("/api/v1/llm/orchestrate", json={"prompt": "x", "models": ["alpha"]}, headers=auth)
        assert r.status_code == 402
        usage = (await client.get("/api/v1/llm/usage", headers=auth)).json()
        assert usage["budget"]["spent_usd_today"] >= 0.0001

        auth = {"Authorization": f"Bearer {talker}"}
        body = {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "cache": False}
        for _ in range(2):
            r = await client.post("/v1/chat/completions", json=body, headers=auth)
            assert r.status_code == 200, (r.text, st.procs["llm"].tail(30))
        r = await client.post("/v1/chat/completions", json=body, headers=auth)
        assert r.status_code == 429 and "tokens" in r.json()["detail"]


async def test_no_provider_configured(make_stack):
    if any(os.environ.get(k) for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "LLM_MODELS_FILE")):
        pytest.skip("a provider is configured in this environment")
    # Nothing at all: no provider, and the demo models (on by default in tests) turned off.
    stack = await make_stack(("auth", "llm", "gateway"), {"LLM_DEMO_MODELS": "false"})
    async with httpx.AsyncClient(timeout=30) as client:
        health = (await client.get(f"{stack.url('llm')}/health")).json()
        assert health["status"] == "warn"
        providers = health["checks"]["providers:responseTime"][0]
        assert providers["status"] == "warn" and "OPENAI_API_KEY" in providers["output"]
        assert (await client.get(f"{stack.url('llm')}/ready")).status_code == 200
        token = await new_access_token(stack.url("gateway"))
        await keys_fetched(stack.url("llm"), token)
        auth = {"Authorization": f"Bearer {token}"}
        r = await client.post(f"{stack.url('gateway')}/api/v1/llm/orchestrate", json={"prompt": "x"}, headers=auth)
        assert r.status_code == 503 and "OPENAI_API_KEY" in r.json()["detail"]
        r = await client.post(
            f"{stack.url('gateway')}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
            headers=auth,
        )
        assert r.status_code == 503 and "LLM_MODELS_FILE" in r.json()["detail"]
        models = (await client.get(f"{stack.url('gateway')}/api/v1/llm/models", headers=auth)).json()
        assert models["models"] == [] and "OPENAI_API_KEY" in models["detail"]
