"""The OpenAI wire format: completion bodies, ``chat.completion.chunk`` events, the model list and
errors with an OpenAI-style ``error`` member (which OpenAI clients read) in the problem+json body."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from shared.errors import ProblemError
from ultrai_llm.engine import CallResult
from ultrai_llm.layers import virtual_models

CREATED = int(time.time())


def openai_error(
    status: int, message: str, kind: str, code: str | None = None, headers: dict[str, str] | None = None
) -> ProblemError:
    return ProblemError(
        status, message, extra={"error": {"message": message, "type": kind, "code": code}}, headers=headers
    )


def model_not_found(model: str) -> ProblemError:
    return openai_error(404, f"The model {model!r} does not exist.", "invalid_request_error", "model_not_found")


def model_list(statuses: list[dict[str, Any]]) -> dict[str, Any]:
    """``GET /v1/models``: the models as listed, then the virtual ``ultrai/*`` ones when any model is."""
    data = [
        {"id": m["name"], "object": "model", "created": CREATED, "owned_by": m["provider"], "status": m["status"]}
        for m in statuses
    ]
    if data:
        data += [{"id": name, "object": "model", "created": CREATED, "owned_by": "ultrai"} for name in virtual_models()]
    return {"object": "list", "data": data}


def message_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def completion_body(
    completion_id: str, model: str, text: str, finish: str | None, usage: dict[str, int], extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish or "stop",
            }
        ],
        "usage": {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]},
        "ultrai": extra,
    }


def call_usage(result: CallResult) -> dict[str, int]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens}


def call_extra(result: CallResult) -> dict[str, Any]:
    return {"cached": result.cached, "cost_usd": result.cost_usd, "latency_ms": round(result.latency_ms, 2)}


class ChunkWriter:
    """Renders events as OpenAI ``chat.completion.chunk`` server-sent events."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.model = model
        self.include_usage = include_usage
        self.started = False

    def chunk(self, delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "choices": [] if usage else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage:
            body["usage"] = {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()

    def content(self, text: str) -> bytes:
        out = b""
        if not self.started:
            self.started = True
            out += self.chunk({"role": "assistant", "content": ""})
        return out + self.chunk({"content": text})

    def finish(self, text_if_unsent: str, finish: str | None, usage: dict[str, int]) -> bytes:
        out = b"" if self.started or not text_if_unsent else self.content(text_if_unsent)
        out += self.chunk({}, finish or "stop")
        if self.include_usage:
            out += self.chunk({}, usage=usage)
        return out + b"data: [DONE]\n\n"

    @staticmethod
    def error(body: dict[str, Any]) -> bytes:
        error = body.get("error") or {"message": body.get("detail"), "type": "server_error", "code": None}
        return f"data: {json.dumps({'error': error}, separators=(',', ':'))}\n\n".encode()
