"""The demo models as a litellm custom provider (``litellm.custom_provider_map``): litellm calls
``DemoProvider`` as it would call a provider's API, so a demo model goes through the Router,
streams, reports usage and is priced (at 0 USD) like any other model.

The answer is computed in a worker thread (a long document must not hold the event loop) and
streamed in chunks of a few words, the last one carrying the finish reason and the usage.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ultrai_llm.demo.text import KINDS, answer, content_text, count_tokens, cut_to_tokens
from ultrai_llm.engine_setup import CustomLLM, Usage, litellm

if TYPE_CHECKING:
    from litellm.types.llms.openai import ChatCompletionUsageBlock
    from litellm.types.utils import GenericStreamingChunk, ModelResponse

PROVIDER = "demo"
PREFIX = f"{PROVIDER}/"
CONTEXT_WINDOW = 128_000
MAX_OUTPUT_TOKENS = 4096
# Words per streamed chunk.
CHUNK_WORDS = 4
# Tokens a message costs besides its content (its role and separators), as providers count them.
MESSAGE_OVERHEAD = 3


@dataclass
class Reply:
    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int

    def usage(self) -> ChatCompletionUsageBlock:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def model_names() -> list[str]:
    return [PREFIX + kind for kind in KINDS]


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(count_tokens(content_text(m.get("content"))) + MESSAGE_OVERHEAD for m in messages)


def reply(model: str, messages: list[dict[str, Any]], optional_params: dict[str, Any]) -> Reply:
    """The answer of demo model ``model`` ("extract" or "demo/extract"), cut at ``max_tokens``."""
    kind = model.removeprefix(PREFIX)
    if kind not in KINDS:
        raise ValueError(f"no demo model {model!r}")
    text = answer(kind, PREFIX + kind, messages)
    finish: Literal["stop", "length"] = "stop"
    limit = optional_params.get("max_tokens") or optional_params.get("max_completion_tokens")
    if isinstance(limit, int) and limit > 0 and count_tokens(text) > limit:
        text, finish = cut_to_tokens(text, limit), "length"
    return Reply(text, finish, prompt_tokens(messages), count_tokens(text))


def chunks(text: str) -> list[str]:
    """The text in pieces of a few words, which joined give it back exactly."""
    words = re.findall(r"\s*\S+\s*", text)
    return ["".join(words[i : i + CHUNK_WORDS]) for i in range(0, len(words), CHUNK_WORDS)] or [text]


def _streamed(done: Reply) -> Iterator[GenericStreamingChunk]:
    pieces = chunks(done.text)
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        yield {
            "text": piece,
            "is_finished": last,
            "finish_reason": done.finish_reason if last else "",
            "usage": done.usage() if last else None,
            "index": 0,
            "tool_use": None,
        }


def _filled(response: ModelResponse, model: str, done: Reply) -> ModelResponse:
    response.choices[0].message.content = done.text
    response.choices[0].finish_reason = done.finish_reason
    response.model = PREFIX + model.removeprefix(PREFIX)
    response.usage = Usage(  # type: ignore[attr-defined]
        prompt_tokens=done.prompt_tokens,
        completion_tokens=done.completion_tokens,
        total_tokens=done.prompt_tokens + done.completion_tokens,
    )
    return response


class DemoProvider(CustomLLM):
    """litellm's entry points for the demo models. litellm passes every argument by name; these
    read the model, the messages, the parameters and (without a stream) the response to fill."""

    def completion(self, *args: Any, **kwargs: Any) -> ModelResponse:
        return _filled(kwargs["model_response"], kwargs["model"], _reply(kwargs))

    def streaming(self, *args: Any, **kwargs: Any) -> Iterator[GenericStreamingChunk]:
        yield from _streamed(_reply(kwargs))

    async def acompletion(self, *args: Any, **kwargs: Any) -> ModelResponse:
        done = await asyncio.to_thread(_reply, kwargs)
        return _filled(kwargs["model_response"], kwargs["model"], done)

    # litellm declares a coroutine returning the stream; its stream wrapper iterates what the call
    # returns, and an asynchronous generator is such a stream.
    async def astreaming(  # type: ignore[override]
        self, *args: Any, **kwargs: Any
    ) -> AsyncIterator[GenericStreamingChunk]:
        done = await asyncio.to_thread(_reply, kwargs)
        for chunk in _streamed(done):
            yield chunk
            await asyncio.sleep(0)  # one chunk at a time, as a provider's stream arrives


def _reply(call: dict[str, Any]) -> Reply:
    return reply(call["model"], call["messages"], call.get("optional_params") or {})


_HANDLER = DemoProvider()


def register() -> None:
    """Make the ``demo`` provider known to litellm (once), with its models priced at 0 USD."""
    if not any(item["provider"] == PROVIDER for item in litellm.custom_provider_map):
        litellm.custom_provider_map.append({"provider": PROVIDER, "custom_handler": _HANDLER})
    from litellm.utils import custom_llm_setup

    custom_llm_setup()  # type: ignore[no-untyped-call]
    litellm.register_model(
        {
            name: {
                "litellm_provider": PROVIDER,
                "mode": "chat",
                "max_input_tokens": CONTEXT_WINDOW,
                "max_output_tokens": MAX_OUTPUT_TOKENS,
                "max_tokens": MAX_OUTPUT_TOKENS,
                "input_cost_per_token": 0.0,
                "output_cost_per_token": 0.0,
            }
            for name in model_names()
        }
    )
