"""The OpenAI-compatible API through the gateway, with the official ``openai`` SDK as the client."""

from __future__ import annotations

import json

import openai
import pytest
from openai import AsyncOpenAI

from tests.fakes.openai_server import FakeOpenAI
from tests.llm.conftest import unique

pytestmark = pytest.mark.e2e


@pytest.fixture
async def sdk(llm_stack, token):
    client = AsyncOpenAI(base_url=llm_stack.url("gateway") + "/v1", api_key=token, max_retries=0, timeout=30)
    yield client
    await client.close()


async def test_sdk_chat_completion(sdk: AsyncOpenAI, fake_provider: FakeOpenAI):
    fake_provider.behave("sdk", text="Hello from the fake.")
    prompt = unique("Say hello")
    completion = await sdk.chat.completions.create(
        model="sdk",
        messages=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": prompt}],
        temperature=0,
        max_tokens=20,
    )
    assert completion.choices[0].message.content == "Hello from the fake."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "sdk"
    assert completion.usage.completion_tokens > 0 and completion.usage.prompt_tokens > 0
    sent = fake_provider.calls("sdk")[-1].body
    assert sent["messages"][-1]["content"] == prompt and sent["temperature"] == 0 and sent["max_tokens"] == 20


async def test_sdk_streaming(sdk: AsyncOpenAI, fake_provider: FakeOpenAI):
    fake_provider.behave("sdk", text="one two three four five")
    stream = await sdk.chat.completions.create(
        model="sdk",
        messages=[{"role": "user", "content": unique()}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == "one two three four five"
    assert len([p for p in pieces if p]) > 1  # token by token, not in one piece
    assert finish == "stop" and usage is not None and usage.completion_tokens > 0


async def test_sdk_lists_models_with_virtual_ones(sdk: AsyncOpenAI):
    ids = [m.id async for m in sdk.models.list()]
    assert "alpha" in ids and "ultrai/synthesis" in ids and "ultrai/parallel" in ids


async def test_sdk_virtual_synthesis_model(sdk: AsyncOpenAI, fake_provider: FakeOpenAI):
    fake_provider.behave("alpha", text="A thinks 4.")
    fake_provider.behave("beta", text="B thinks four.")
    fake_provider.behave("writer", text="It is 4.")
    completion = await sdk.chat.completions.create(
        model="ultrai/synthesis",
        messages=[{"role": "user", "content": unique("2+2?")}],
        extra_body={"models": ["alpha", "beta"], "synthesis_model": "writer"},
    )
    assert completion.choices[0].message.content == "It is 4."
    detail = completion.model_extra["ultrai"]
    assert {r["model"] for r in detail["results"]} == {"alpha", "beta"}
    # Streaming: the synthesis arrives as content chunks.
    fake_provider.behave("writer", text="Four, streamed word by word.")
    stream = await sdk.chat.completions.create(
        model="ultrai/synthesis",
        messages=[{"role": "user", "content": unique("2+2?")}],
        extra_body={"models": ["alpha", "beta"], "synthesis_model": "writer"},
        stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Four, streamed word by word."


async def test_sdk_errors(sdk: AsyncOpenAI, fake_provider: FakeOpenAI):
    with pytest.raises(openai.NotFoundError):
        await sdk.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    fake_provider.behave("flaky", status=500, retry_after=0.01)
    with pytest.raises(openai.APIStatusError) as info:
        await sdk.chat.completions.create(model="flaky", messages=[{"role": "user", "content": unique()}])
    assert info.value.status_code == 502
    # The provider's own rate limit (after litellm's retries) is a 429 the SDK recognises, with
    # Retry-After, streamed or not; a model that fails otherwise stays a 502.
    fake_provider.behave("limited", status=429, retry_after=0.01)
    for stream in (False, True):
        with pytest.raises(openai.RateLimitError) as limited:
            await sdk.chat.completions.create(
                model="limited", messages=[{"role": "user", "content": unique()}], stream=stream
            )
        assert limited.value.body["code"] == "rate_limit_exceeded"
        assert int(limited.value.response.headers["retry-after"]) >= 1
    # A stream that breaks off midway reaches the SDK as an error, not as a short answer.
    fake_provider.behave("brittle", text="this will not arrive whole", break_after=2)
    stream = await sdk.chat.completions.create(
        model="brittle", messages=[{"role": "user", "content": unique()}], stream=True
    )
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    # Too long for the model: refused before any call, the way OpenAI does.
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.chat.completions.create(model="priced", messages=[{"role": "user", "content": "word " * 3000}])
    assert info.value.body["code"] == "context_length_exceeded"


async def test_a_bad_key_is_401(llm_stack):
    client = AsyncOpenAI(base_url=llm_stack.url("gateway") + "/v1", api_key="sk-not-ours", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "x"}])
    await client.close()


async def streamed_chunks(gateway, body: dict) -> list[dict]:
    """The ``data:`` chunks of a streamed chat completion, up to ``[DONE]`` (which must end it)."""
    async with gateway.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200, await r.aread()
        lines = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


@pytest.mark.parametrize("model", ["sdk", "ultrai/parallel"])
async def test_streamed_usage_comes_last_only_when_asked(gateway, fake_provider: FakeOpenAI, model: str):
    """As OpenAI does: with ``stream_options.include_usage`` the last chunk before [DONE] carries the
    usage and no choices; without it no chunk carries usage."""
    fake_provider.behave("sdk", text="one two three", prompt_tokens=11, completion_tokens=7)
    body = {"model": model, "messages": [{"role": "user", "content": unique()}], "models": ["sdk"]}
    chunks = await streamed_chunks(gateway, {**body, "stream_options": {"include_usage": True}})
    *content, last = chunks
    assert last["choices"] == []
    assert last["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    assert all("usage" not in c and c["choices"] for c in content)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in content)
    assert text.endswith("one two three")
    assert content[-1]["choices"][0]["finish_reason"] == "stop"
    # Not asked for (absent, or false): no usage chunk at all.
    for options in ({}, {"stream_options": {"include_usage": False}}):
        chunks = await streamed_chunks(
            gateway, {**body, "messages": [{"role": "user", "content": unique()}], **options}
        )
        assert all("usage" not in c and c["choices"] for c in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "extra", [{"seed": -1}, {"max_tokens": 1_000_001}, {"max_completion_tokens": 1_000_001}], ids=str
)
async def test_parameters_out_of_range_are_a_422_not_a_500(gateway, extra: dict):
    """The chat body is held to the bounds of the parameters it becomes (a seed the provider cannot
    take, more output tokens than any model has), found by the fuzzer as a 500."""
    body = {"model": "sdk", "messages": [{"role": "user", "content": unique()}], **extra}
    r = await gateway.post("/v1/chat/completions", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
