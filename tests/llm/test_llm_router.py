"""The service's Router (ultrai_llm/llm_router.py) in process, against the fake provider over real
HTTP: a deployment with a requests-per-minute limit has its calls counted as litellm counts them;
one without a limit is found to have none once, and then not counted at all; the answer keeps
its usage and its cost."""

from __future__ import annotations

from tests.fakes.openai_server import FakeOpenAI
from ultrai_llm.llm_router import ServiceRouter

PRICE_IN, PRICE_OUT = 1e-6, 2e-6


def router(fake: FakeOpenAI) -> ServiceRouter:
    priced = {"input_cost_per_token": PRICE_IN, "output_cost_per_token": PRICE_OUT}
    return ServiceRouter(
        model_list=[
            {**fake.model_entry("limited", rpm=1000), "model_info": {"id": "limited-1", **priced}},
            {**fake.model_entry("free"), "model_info": {"id": "free-1", **priced}},
        ],
        num_retries=0,
    )


async def ask(r: ServiceRouter, model: str) -> object:
    return await r.acompletion(model=model, messages=[{"role": "user", "content": "a question"}], timeout=10)


async def test_a_limited_deployment_is_counted_and_a_free_one_is_not(fake_provider: FakeOpenAI) -> None:
    fake_provider.behave("limited", text="counted", prompt_tokens=10, completion_tokens=5)
    fake_provider.behave("free", text="free", prompt_tokens=10, completion_tokens=5)
    r = router(fake_provider)
    for _ in range(3):
        await ask(r, "limited")
        answer = await ask(r, "free")
    # litellm's own count of the limited deployment's requests this minute (what its rpm routing
    # and its usage in Redis read), once per call.
    _tpm, rpm = await r.get_model_group_usage("limited")
    assert rpm == 3
    assert await r.get_model_group_usage("free") == (None, None)
    assert r._unlimited == {("free-1", "free")}
    usage = answer.usage  # type: ignore[attr-defined]
    assert (usage.prompt_tokens, usage.completion_tokens) == (10, 5)
    cost = answer._hidden_params["response_cost"]  # type: ignore[attr-defined]
    assert abs(cost - (10 * PRICE_IN + 5 * PRICE_OUT)) < 1e-12


async def test_a_new_model_list_is_looked_at_again(fake_provider: FakeOpenAI) -> None:
    r = router(fake_provider)
    await ask(r, "free")
    assert r._unlimited
    r.set_model_list([{**fake_provider.model_entry("free", rpm=1000), "model_info": {"id": "free-1"}}])
    assert not r._unlimited
    await ask(r, "free")
    _tpm, rpm = await r.get_model_group_usage("free")
    assert rpm == 1 and not r._unlimited
