"""Chat completions, OpenAI style: one model of the catalog, or a virtual ``ultrai/<pattern>`` model
that orchestrates (its models from the ``models`` extension field, or the service's defaults); the
virtual ``ultrai/rounds-N`` and ``ultrai/samples-N`` models add refinement rounds or samples to the
synthesis (``ultrai_llm.layers``).

``cache: false`` in the body bypasses the response cache. With ``stream`` the answer is a stream of
``chat.completion.chunk`` events; a failure before the first event is answered with its status.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from ultrai_llm.catalog import VIRTUAL_PREFIX, ModelSpec
from ultrai_llm.engine import Delta, Messages
from ultrai_llm.estimate import check_affordable
from ultrai_llm.layers import variant, with_variant
from ultrai_llm.openai_format import (
    ChunkWriter,
    call_extra,
    call_usage,
    completion_body,
    message_text,
    model_not_found,
    openai_error,
)
from ultrai_llm.orchestrate import Orchestrator
from ultrai_llm.schemas import ChatCompletionRequest, ModelParams, OrchestrateRequest
from ultrai_llm.service import Llm
from ultrai_llm.streaming import Emit, Renderer, event_stream

SYSTEM_ROLES = ("system", "developer")


async def complete_chat(llm: Llm, body: ChatCompletionRequest, user_id: str) -> Response | dict[str, Any]:
    llm.engine.require_provider()
    if body.model.startswith(VIRTUAL_PREFIX):
        return await orchestrated_chat(llm, body, user_id)
    return await model_chat(llm, body, user_id)


def include_usage(body: ChatCompletionRequest) -> bool:
    return bool((body.stream_options or {}).get("include_usage"))


# ---- one model ----------------------------------------------------------------------------------
async def model_chat(llm: Llm, body: ChatCompletionRequest, user_id: str) -> Response | dict[str, Any]:
    spec, params, messages = await checked_call(llm, body)
    await llm.usage.check_budget(user_id)
    writer = ChunkWriter(body.model, include_usage(body))

    async def run(emit: Emit | None) -> dict[str, Any]:
        on_delta: Delta | None = None
        if emit is not None:

            async def on_delta(text: str) -> None:
                await emit("delta", {"text": text})

        result = await llm.engine.call(
            spec.name,
            messages,
            params,
            stage="answer",
            scope=user_id,
            use_cache=body.cache,
            on_delta=on_delta,
        )
        llm.usage.record(user_id, "chat", [result])
        if result.retry_after is not None:
            # The provider's rate limit, after the Router's retries: the client's to wait out, as
            # OpenAI answers it (SDKs back off on a 429 with Retry-After), not a failure of ours.
            raise openai_error(
                429,
                f"The model {spec.name} is rate limited by its provider; try again in {result.retry_after} s.",
                "requests",
                "rate_limit_exceeded",
                headers={"Retry-After": str(result.retry_after)},
            )
        if not result.ok:
            raise openai_error(502, f"The model {spec.name} failed: {result.error}", "upstream_error", "model_failed")
        text = result.text or ""
        usage, extra = call_usage(result), call_extra(result)
        return completion_body(writer.id, body.model, text, result.finish_reason, usage, extra)

    if not body.stream:
        return await run(None)
    return await event_stream(run, model_chunks(writer))


async def checked_call(llm: Llm, body: ChatCompletionRequest) -> tuple[ModelSpec, ModelParams, Messages]:
    """The model, parameters and messages of a call, refused (404, 422, 400) before any is made."""
    spec = llm.engine.catalog.specs.get(body.model)
    if spec is None:
        raise model_not_found(body.model)
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
    return spec, params, messages


def model_chunks(writer: ChunkWriter) -> Renderer:
    def render(event: str, data: dict[str, Any]) -> bytes | None:
        if event == "delta":
            return writer.content(data["text"])
        if event == "done":
            choice = data["choices"][0]
            return writer.finish(choice["message"]["content"], choice["finish_reason"], data["usage"])
        if event == "error":
            return writer.error(data)
        return None

    return render


# ---- a virtual model: an orchestration ------------------------------------------------------------
async def orchestrated_chat(llm: Llm, body: ChatCompletionRequest, user_id: str) -> Response | dict[str, Any]:
    chosen = variant(body.model.removeprefix(VIRTUAL_PREFIX))
    if chosen is None:
        raise model_not_found(body.model)
    request = with_variant(orchestrate_request(body, chosen.pattern, llm.orchestrator), chosen, bool(body.models))
    plan = await llm.orchestrator.plan(request, user_id, endpoint="chat")
    await check_affordable(llm, plan, user_id)
    writer = ChunkWriter(body.model, include_usage(body))
    final_stage = "synthesis" if plan.synthesis is not None else None

    async def run(emit: Emit | None) -> dict[str, Any]:
        answer = await llm.orchestrator.execute(plan, emit)
        usage = {k: answer["usage"][k] for k in ("prompt_tokens", "completion_tokens")}
        return completion_body(writer.id, body.model, final_text(answer), "stop", usage, answer)

    if not body.stream:
        return await run(None)
    return await event_stream(run, orchestration_chunks(writer, final_stage))


def orchestrate_request(body: ChatCompletionRequest, pattern: str, orchestrator: Orchestrator) -> OrchestrateRequest:
    """The conversation as an orchestration: the last user message is the prompt, system messages the
    system prompt, and the other turns its context."""
    turns = [(m.role, message_text(m.content)) for m in body.messages]
    users = [i for i, (role, _) in enumerate(turns) if role == "user"]
    if not users:
        raise openai_error(400, "The messages need a user message.", "invalid_request_error")
    last = users[-1]
    system = "\n\n".join(t for r, t in turns if r in SYSTEM_ROLES) or None
    earlier = [f"{r}: {t}" for i, (r, t) in enumerate(turns) if i != last and r not in SYSTEM_ROLES]
    names = body.models or orchestrator.default_models()
    params = body.params().model_copy(update={"system_prompt": system})
    every = {*names, *([body.synthesis_model] if body.synthesis_model else [])}
    return OrchestrateRequest(
        prompt=turns[last][1] or " ",
        context=earlier or None,
        models=names,
        pattern=pattern,
        synthesis_model=body.synthesis_model,
        params={m: params for m in every},
        cache=body.cache,
    )


def final_text(answer: dict[str, Any]) -> str:
    """The synthesis when it succeeded; otherwise each model's last good answer under its name."""
    synthesis = answer["synthesis"]
    if synthesis and synthesis["status"] == "ok":
        text: str = synthesis["text"]
        return text
    finals: dict[str, str] = {}
    for r in answer["results"]:
        if r["status"] == "ok":
            name = r["model"] + (f" (sample {r['sample']})" if "sample" in r else "")
            finals[name] = r["text"]  # a later round or a review replaces the model's first answer
    return "\n\n".join(f"### {name}\n{t}" for name, t in finals.items())


def orchestration_chunks(writer: ChunkWriter, final_stage: str | None) -> Renderer:
    """Only the final stage's text streams as content (the synthesis); without a synthesis the
    whole answer comes with the end of the stream."""

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

    return render
