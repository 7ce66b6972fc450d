"""Stream chunks built by pydantic's validator (ultrai_llm/sdk_chunks.py): equal to what the SDK's
own construction builds from a conforming chunk, built by that construction itself from a chunk that
does not conform, and a real stream through litellm (against the fake provider over HTTP) keeps its
text, finish reason and usage."""

from __future__ import annotations

from typing import Any

import httpx
from openai import AsyncOpenAI
from openai._models import construct_type
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.fakes.openai_server import FakeOpenAI
from ultrai_llm import engine_setup, sdk_chunks
from ultrai_llm.llm_router import ServiceRouter

CONFORMING: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1700000000,
    "model": "m",
    "system_fingerprint": None,
    "choices": [
        {"index": 0, "delta": {"role": "assistant", "content": "Hi "}, "logprobs": None, "finish_reason": None}
    ],
    "reasoning": {"extra": "kept as given"},  # a field of the provider's own
}
USAGE_ONLY: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1700000000,
    "model": "m",
    "choices": [],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}
# Values the SDK's types do not allow (a role and a finish reason of the provider's own, a created
# time as text): validation refuses them, the SDK's construction keeps them as they are.
NONCONFORMING: dict[str, Any] = {
    **CONFORMING,
    "created": "soon",
    "choices": [{"index": 0, "delta": {"role": "model", "content": "Hi "}, "finish_reason": "eos"}],
}


def build(data: dict[str, Any], cast_to: Any = ChatCompletionChunk) -> Any:
    client = AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    return client._process_response_data(data=data, cast_to=cast_to, response=httpx.Response(200))


def test_the_service_builds_chunks_with_the_validator() -> None:
    assert engine_setup.litellm is not None and sdk_chunks.installed()


def test_a_conforming_chunk_is_built_equal_to_the_sdks_construction() -> None:
    for data in (CONFORMING, USAGE_ONLY):
        ours, theirs = build(data), construct_type(type_=ChatCompletionChunk, value=data)
        assert type(ours) is ChatCompletionChunk
        assert ours == theirs
        assert ours.model_dump() == theirs.model_dump()
        assert ours.model_dump(exclude_unset=True) == theirs.model_dump(exclude_unset=True)
        assert ours.to_dict() == theirs.to_dict()
    assert build(CONFORMING).reasoning == {"extra": "kept as given"}  # type: ignore[attr-defined]


def test_a_chunk_that_does_not_conform_is_built_as_the_sdk_builds_it() -> None:
    ours, theirs = build(NONCONFORMING), construct_type(type_=ChatCompletionChunk, value=NONCONFORMING)
    assert ours == theirs
    assert ours.created == "soon"
    assert ours.choices[0].delta.role == "model" and ours.choices[0].finish_reason == "eos"


def test_other_types_are_left_to_the_sdk() -> None:
    whole = {
        "id": "chatcmpl-2",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
    }
    assert build(whole, ChatCompletion) == construct_type(type_=ChatCompletion, value=whole)


async def test_a_stream_through_litellm_keeps_its_text_finish_and_usage(fake_provider: FakeOpenAI) -> None:
    text = " ".join(f"word{i}" for i in range(40))
    fake_provider.behave("stream-a", text=text, prompt_tokens=7, completion_tokens=40)
    router = ServiceRouter(model_list=[fake_provider.model_entry("stream-a")], num_retries=0)
    response = await router.acompletion(
        model="stream-a",
        messages=[{"role": "user", "content": "a question"}],
        stream=True,
        stream_options={"include_usage": True},
        timeout=10,
    )
    pieces: list[str] = []
    finish, usage = None, None
    async for chunk in response:  # type: ignore[union-attr]
        usage = getattr(chunk, "usage", None) or usage
        if chunk.choices:
            finish = chunk.choices[0].finish_reason or finish
            pieces.append(chunk.choices[0].delta.content or "")
    assert len([p for p in pieces if p]) == 40
    assert "".join(pieces) == text
    assert finish == "stop"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (7, 40)
