"""The OpenAI-compatible API: ``POST /v1/chat/completions`` (stream and not) and ``GET /v1/models``.

Any OpenAI client (the official SDK, LangChain, a frontend) uses it through the gateway with the
user's access token as its API key. The orchestration patterns appear as virtual models
(``ultrai/parallel``, ``ultrai/peer_review``, ``ultrai/synthesis``); their models are chosen with the
``models`` extension field (the SDK's ``extra_body``) or are the service's defaults. ``cache: false``
in the body bypasses the response cache. Errors are problem+json with an OpenAI-style ``error``
member, which OpenAI clients read.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request

from shared.errors import ProblemError, problem_responses
from shared.tokens import Principal, current_user
from ultrai_llm.api import llm_of, model_statuses, user_or_service
from ultrai_llm.catalog import PATTERNS, VIRTUAL_PREFIX
from ultrai_llm.engine import CallResult
from ultrai_llm.schemas import ChatCompletionRequest, OrchestrateRequest
from ultrai_llm.streaming import Emit, event_stream

router = APIRouter(prefix="/v1", tags=["openai"])
CREATED = int(time.time())


def openai_error(status: int, message: str, kind: str, code: str | None = None) -> ProblemError:
    return ProblemError(status, message, extra={"error": {"message": message, "type": kind, "code": code}})


@router.get(
    "/models", summary="The models, OpenAI style (virtual ultrai/* models included)", responses=problem_responses(401)
)
async def list_models(request: Request, _: Principal = Depends(user_or_service)) -> dict[str, Any]:
    llm = llm_of(request)
    data = [
        {"id": m["name"], "object": "model", "created": CREATED, "owned_by": m["provider"], "status": m["status"]}
        for m in await model_statuses(llm)
    ]
    if data:
        data += [
            {"id": VIRTUAL_PREFIX + p, "object": "model", "created": CREATED, "owned_by": "ultrai"} for p in PATTERNS
        ]
    return {"object": "list", "data": data}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _completion(cid: str, model: str, text: str, finish: str | None, usage: dict[str, int], extra: dict) -> dict:
    return {
        "id": cid,
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


class ChunkWriter:
    """Renders events as OpenAI ``chat.completion.chunk`` server-sent events."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.model = model
        self.include_usage = include_usage
        self.started = False

    def chunk(self, delta: dict[str, Any], finish: str | None = None, usage: dict | None = None) -> bytes:
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


@router.post(
    "/chat/completions",
    summary="OpenAI-compatible chat completions (stream and not); ultrai/* models orchestrate",
    responses={
        **problem_responses(400, 401, 402, 404, 413, 422, 429, 502, 503),
        200: {"content": {"application/json": {}, "text/event-stream": {}}},
    },
)
async def chat_completions(body: ChatCompletionRequest, request: Request, user: Principal = Depends(current_user)):
    llm = llm_of(request)
    llm.engine.require_provider()
    if body.model.startswith(VIRTUAL_PREFIX):
        return await _virtual(body, request, user)
    spec = llm.engine.catalog.specs.get(body.model)
    if spec is None:
        raise openai_error(404, f"The model {body.model!r} does not exist.", "invalid_request_error", "model_not_found")
    params = llm.engine.check_params(body.params(), spec)
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    needed = await llm.engine.overflow(spec, messages, params.max_tokens)
    if needed is not None:
        raise openai_error(
            400,
            f"This model's maximum context length is {spec.context_window} tokens; the messages need {needed} "
            f"(plus {params.max_tokens or 0} for the completion).",
            "invalid_request_error",
            "context_length_exceeded",
        )
    await llm.usage.check_budget(user.user_id)
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    writer = ChunkWriter(body.model, include_usage)

    async def run(emit: Emit | None) -> dict[str, Any]:
        on_delta = None
        if emit is not None:

            async def on_delta(text: str) -> None:
                await emit("delta", {"text": text})

        result = await llm.engine.call(
            spec.name,
            messages,
            params,
            stage="answer",
            scope=user.user_id,
            use_cache=body.cache,
            on_delta=on_delta,
        )
        llm.usage.record(user.user_id, "chat", [result])
        if not result.ok:
            raise openai_error(502, f"The model {spec.name} failed: {result.error}", "upstream_error", "model_failed")
        text = result.text or ""
        return _completion(writer.id, body.model, text, result.finish_reason, _usage(result), _extra(result))

    if not body.stream:
        return await run(None)

    def render(event: str, data: dict[str, Any]) -> bytes | None:
        if event == "delta":
            return writer.content(data["text"])
        if event == "done":
            choice = data["choices"][0]
            return writer.finish(choice["message"]["content"], choice["finish_reason"], data["usage"])
        if event == "error":
            return writer.error(data)
        return None

    return await event_stream(run, render)


def _usage(result: CallResult) -> dict[str, int]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens}


def _extra(result: CallResult) -> dict[str, Any]:
    return {"cached": result.cached, "cost_usd": result.cost_usd, "latency_ms": round(result.latency_ms, 2)}


async def _virtual(body: ChatCompletionRequest, request: Request, user: Principal):
    llm = llm_of(request)
    pattern = body.model.removeprefix(VIRTUAL_PREFIX)
    if pattern not in PATTERNS:
        raise openai_error(404, f"The model {body.model!r} does not exist.", "invalid_request_error", "model_not_found")
    turns = [(m.role, _text(m.content)) for m in body.messages]
    users = [i for i, (role, _) in enumerate(turns) if role == "user"]
    if not users:
        raise openai_error(400, "The messages need a user message.", "invalid_request_error")
    last = users[-1]
    system = "\n\n".join(t for r, t in turns if r in ("system", "developer")) or None
    earlier = [f"{r}: {t}" for i, (r, t) in enumerate(turns) if i != last and r not in ("system", "developer")]
    names = body.models or llm.orchestrator.default_models()
    params = body.params().model_copy(update={"system_prompt": system})
    every = {*names, *([body.synthesis_model] if body.synthesis_model else [])}
    req = OrchestrateRequest(
        prompt=turns[last][1] or " ",
        context=earlier or None,
        models=names,
        pattern=pattern,  # type: ignore[arg-type]
        synthesis_model=body.synthesis_model,
        params={m: params for m in every},
        cache=body.cache,
    )
    plan = await llm.orchestrator.plan(req, user.user_id, endpoint="chat")
    await llm.usage.check_budget(user.user_id)
    writer = ChunkWriter(body.model, bool((body.stream_options or {}).get("include_usage")))
    final_stage = "synthesis" if plan.synthesis is not None else None

    async def run(emit: Emit | None) -> dict[str, Any]:
        answer = await llm.orchestrator.execute(plan, emit)
        synthesis = answer["synthesis"]
        if synthesis and synthesis["status"] == "ok":
            text = synthesis["text"]
        else:
            finals: dict[str, str] = {}
            for r in answer["results"]:
                if r["status"] == "ok":
                    finals[r["model"]] = r["text"]  # a review replaces the model's first answer
            text = "\n\n".join(f"### {model}\n{t}" for model, t in finals.items())
        usage = {k: answer["usage"][k] for k in ("prompt_tokens", "completion_tokens")}
        return _completion(writer.id, body.model, text, "stop", usage, answer)

    if not body.stream:
        return await run(None)

    def render(event: str, data: dict[str, Any]) -> bytes | None:
        if event == "delta" and final_stage and data["stage"] == final_stage:
            return writer.content(data["text"])
        if event == "done":
            choice = data["choices"][0]
            text = "" if writer.started else choice["message"]["content"]
            return writer.finish(text, "stop", data["usage"])
        if event == "error":
            return writer.error(data)
        return None

    return await event_stream(run, render)
