"""One model call through litellm's Router: retries with backoff, fallbacks, cooldowns and timeouts
are the Router's; this module adds the cache, the length check against the model's context window,
a hard deadline, cost, and a result that reports an error instead of raising it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import httpx

from shared.errors import ProblemError
from shared.metrics import UPSTREAM_ERRORS
from shared.ratelimit import RateLimiter
from ultrai_llm.cache import ResponseCache, cache_key
from ultrai_llm.catalog import NO_PROVIDER_HINT, Catalog, ModelSpec
from ultrai_llm.demo.provider import register as register_demo_provider
from ultrai_llm.engine_setup import Router, litellm
from ultrai_llm.llm_router import ServiceRouter
from ultrai_llm.provider_limits import install as install_provider_limits
from ultrai_llm.schemas import ModelParams
from ultrai_llm.settings import LlmSettings

if TYPE_CHECKING:
    from litellm.types.llms.openai import AllMessageValues

log = logging.getLogger("ultrai_llm.engine")

Delta = Callable[[str], Awaitable[None]]
Messages = list[dict[str, Any]]
# How many recent latencies per model are kept for the estimate's expected wall time.
RECENT_LATENCIES = 50
_SECRETISH = re.compile(r"(sk-[A-Za-z0-9_-]{6,}|Bearer\s+\S+|api[_-]?key[=:]\s*\S+)", re.IGNORECASE)


def provider_messages(messages: Messages) -> list[AllMessageValues]:
    """The messages as litellm declares them: this service builds them as plain dicts of that shape."""
    return cast("list[AllMessageValues]", messages)


@dataclass
class CallResult:
    model: str
    stage: str
    status: str = "ok"  # "ok" | "error"
    text: str | None = None
    error: str | None = None
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cached: bool = False
    finish_reason: str | None = None
    round: int | None = None  # the answer round, with rounds above 1 (ultrai_llm.layers)
    sample: int | None = None  # which sample of the model, with samples above 1
    # Set when the provider (or the deployment's rpm limit) refused for its rate limit: seconds to wait.
    retry_after: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_cache(cls, model: str, stage: str, entry: dict[str, Any], latency_ms: float) -> CallResult:
        return cls(
            model,
            stage,
            text=entry["text"],
            prompt_tokens=int(entry.get("prompt_tokens", 0)),
            completion_tokens=int(entry.get("completion_tokens", 0)),
            cached=True,
            finish_reason=entry.get("finish_reason"),
            latency_ms=latency_ms,
        )

    def cache_entry(self) -> dict[str, Any]:
        """What the response cache keeps of a successful call (``from_cache`` reads it back)."""
        return {name: getattr(self, name) for name in _CACHED_FIELDS}

    def public(self) -> dict[str, Any]:
        """The call as the API shows it."""
        answer = {name: getattr(self, name) for name in _PUBLIC_FIELDS}
        answer["latency_ms"] = round(self.latency_ms, 2)
        answer.update(self.labels())
        return answer

    def labels(self) -> dict[str, int]:
        """Its round and sample, when it has them."""
        return {k: v for k, v in (("round", self.round), ("sample", self.sample)) if v is not None}


_CACHED_FIELDS = ("text", "prompt_tokens", "completion_tokens", "finish_reason")
_PUBLIC_FIELDS = (
    "model",
    "stage",
    "status",
    "text",
    "error",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "cached",
)


def describe_error(exc: BaseException) -> str:
    """A short reason for a failed call, with anything that looks like a key removed."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    kinds = (
        ("RateLimitError", "rate limited by the provider"),
        ("ContextWindowExceededError", "the request is longer than the model accepts"),
        ("AuthenticationError", "the provider refused the API key"),
        ("Timeout", "timed out"),
        ("APIConnectionError", "the provider connection failed"),
        ("ServiceUnavailableError", "the provider is unavailable"),
        ("InternalServerError", "the provider failed"),
        ("BadRequestError", "the provider refused the request"),
        ("NotFoundError", "the provider does not know this model"),
    )
    name = type(exc).__name__
    reason = next((text for kind, text in kinds if kind in name), "the call failed")
    status = getattr(exc, "status_code", None)
    message = str(getattr(exc, "message", "") or exc).replace("\n", " ")
    message = _SECRETISH.sub("[redacted]", message)[:240]
    return f"{reason}{f' ({status})' if isinstance(status, int) else ''}: {message}" if message else reason


def provider_retry_after(exc: BaseException) -> int | None:
    """Whole seconds (at least 1) to wait when ``exc`` is a provider's rate-limit refusal, read from
    its Retry-After when it gave one; None for any other failure."""
    if "RateLimitError" not in type(exc).__name__:
        return None
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if isinstance(response, httpx.Response) else None
    try:
        seconds = float(value) if value is not None else 1.0
    except ValueError:  # an HTTP date: not worth parsing for a hint
        seconds = 1.0
    return max(1, math.ceil(seconds)) if math.isfinite(seconds) else 1


def router_redis(settings: LlmSettings) -> dict[str, Any]:
    """The Router's arguments for Redis, when REDIS_URL is set: litellm then keeps its routing state
    (cooldowns, failure counts, usage per deployment) in Redis as well as in memory, so every
    instance sees a deployment cooled down by another and counts its usage; the keys are under
    ``<REDIS_KEY_PREFIX>:llm:router:``."""
    if not settings.redis_url:
        return {}
    return {
        "redis_url": settings.redis_url,
        "cache_kwargs": {
            "namespace": f"{settings.redis_key_prefix}:llm:router",
            "socket_timeout": settings.redis_timeout,
            "socket_connect_timeout": settings.redis_timeout,
        },
    }


class Engine:
    def __init__(
        self, settings: LlmSettings, catalog: Catalog, cache: ResponseCache, limiter: RateLimiter | None = None
    ) -> None:
        """``limiter`` keeps the deployments' requests-per-minute limits (``rpm`` in the models
        file) across instances (ultrai_llm/provider_limits.py); without one they are litellm's own,
        per process."""
        self.settings = settings
        self.catalog = catalog
        self.cache = cache
        self.router: Router | None = None
        # Per model, the latencies (ms) of its recent successful provider calls (cache hits left out).
        self.latencies: dict[str, deque[float]] = {}
        if any(spec.demo for spec in catalog.specs.values()):
            register_demo_provider()
        if limiter is not None:
            install_provider_limits(limiter)
        if not catalog.empty:
            self.router = ServiceRouter(
                model_list=catalog.model_list,
                **router_redis(settings),
                num_retries=settings.llm_num_retries,
                # Seconds, fractions included: litellm's hint says int, its retry wait takes a float.
                retry_after=settings.llm_retry_after,  # type: ignore[arg-type]
                timeout=settings.llm_timeout,
                fallbacks=catalog.fallbacks,
                allowed_fails=settings.llm_allowed_fails,
                cooldown_time=settings.llm_cooldown_time,
            )

    async def warm_up(self) -> None:
        """litellm imports and sets up much on its first call (about a second); make that call at
        start-up, to a closed loopback port, so the first user's request does not pay for it. The
        synchronous call runs in a thread (its imports would otherwise hold the event loop), then
        the asynchronous one sets up the rest."""
        if self.router is None:
            return
        call = {
            "model": "openai/warm-up",
            "messages": [{"role": "user", "content": "warm-up"}],
            "api_base": "http://127.0.0.1:9/v1",
            "api_key": "warm-up",
            "max_retries": 0,
            "timeout": 2,
        }

        def sync_call() -> None:
            try:
                litellm.completion(**call)
            except Exception as exc:  # the port is closed: the failure is the point
                log.debug("warm-up call done (%s)", type(exc).__name__)

        await asyncio.to_thread(sync_call)
        try:
            await litellm.acompletion(**call)
        except Exception as exc:
            log.debug("warm-up call done (%s)", type(exc).__name__)

    async def model_statuses(self) -> list[dict[str, Any]]:
        """Each model as listed; "cooling_down" while litellm has every deployment of it in cooldown."""
        cooling = await self._cooling_down()
        return [
            spec.public("cooling_down" if name in cooling else "available") for name, spec in self.catalog.specs.items()
        ]

    async def _cooling_down(self) -> set[str]:
        if self.router is None:
            return set()
        from litellm.router_utils.cooldown_handlers import async_get_cooldown_deployments

        try:
            down = set(await async_get_cooldown_deployments(self.router, None))
        except Exception:  # the status is informative; never fail the listing for it
            down = set()
        if not down:
            return set()
        deployments: dict[str, list[str]] = {}
        for entry in self.router.model_list:
            deployments.setdefault(entry["model_name"], []).append(entry.get("model_info", {}).get("id"))
        return {name for name, ids in deployments.items() if all(i in down for i in ids)}

    # ---- what a request may ask ------------------------------------------------------------------
    def require_provider(self) -> None:
        if self.router is None:
            raise ProblemError(503, NO_PROVIDER_HINT, title="No LLM provider configured")

    def spec(self, name: str) -> ModelSpec:
        spec = self.catalog.specs.get(name)
        if spec is None:
            known = ", ".join(self.catalog.names()) or "none"
            raise ProblemError(422, f"Unknown model {name!r}; available models: {known}.", title="Unknown model")
        return spec

    def check_params(self, given: ModelParams | None, model: ModelSpec) -> ModelParams:
        params = given or ModelParams()
        if params.max_tokens is not None and model.max_output_tokens and params.max_tokens > model.max_output_tokens:
            raise ProblemError(
                422,
                f"max_tokens {params.max_tokens} is above the limit of {model.name} ({model.max_output_tokens}).",
                title="Invalid parameter",
            )
        return params

    async def overflow(self, model: ModelSpec, messages: Messages, max_tokens: int | None) -> int | None:
        """How many tokens the messages need when that is more than the model's context window
        leaves room for; None when they fit (or the window is unknown)."""
        window = model.context_window
        if not window:
            return None
        room = window - (max_tokens or 0)
        chars = sum(len(str(m.get("content") or "")) for m in messages)
        if chars <= room:  # a token is never shorter than a character: it fits without counting
            return None
        try:
            needed = await asyncio.to_thread(litellm.token_counter, model=model.litellm_model, messages=messages)
        except Exception as exc:  # content litellm cannot count: let the provider judge the length
            log.warning("token count failed for %s: %s", model.name, type(exc).__name__)
            return None
        return needed if needed > room else None

    def recent_latency(self, model: str) -> float | None:
        """The median latency (ms) of the model's recent successful calls; None before any."""
        recent = self.latencies.get(model)
        return statistics.median(recent) if recent else None

    # ---- the call -------------------------------------------------------------------------------
    async def call(
        self,
        model: str,
        messages: Messages,
        params: ModelParams,
        *,
        stage: str,
        scope: str,
        use_cache: bool = True,
        time_limit: float | None = None,
        on_delta: Delta | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> CallResult:
        """One model's answer; a failure is a result with status "error", never an exception.
        ``scope`` (the user) keeps cache entries apart."""
        spec = self.catalog.specs[model]
        kwargs = params.provider_kwargs()
        if response_format is not None:
            kwargs["response_format"] = response_format
        started = time.perf_counter()
        key = None
        if use_cache and self.cache.enabled:
            key = cache_key(scope, model, messages, kwargs)
            entry = await self.cache.get(key)
            if entry is not None:
                if on_delta is not None:
                    await on_delta(entry["text"])
                return CallResult.from_cache(model, stage, entry, (time.perf_counter() - started) * 1000)
        elif self.cache.enabled:
            self.cache.bypassed()
        result = CallResult(model, stage)
        limit = min(time_limit or self.settings.llm_timeout, self.settings.llm_budget_seconds)
        try:
            async with asyncio.timeout(limit):
                if on_delta is None:
                    await self._complete(spec, messages, kwargs, limit, result)
                else:
                    await self._stream(spec, messages, kwargs, limit, result, on_delta)
        except Exception as exc:
            result.status = "error"
            result.error = describe_error(exc)
            result.retry_after = provider_retry_after(exc)
            if isinstance(exc, TimeoutError):
                result.error = f"timed out after {limit:.3g} s"
            UPSTREAM_ERRORS.labels("llm", spec.provider, type(exc).__name__).inc()
            log.warning("model %s failed at %s: %s", model, stage, type(exc).__name__)
        result.latency_ms = (time.perf_counter() - started) * 1000
        if result.ok:
            self.latencies.setdefault(model, deque(maxlen=RECENT_LATENCIES)).append(result.latency_ms)
        if result.ok and key is not None and result.text:
            await self.cache.set(key, result.cache_entry())
        return result

    def _router(self) -> Router:
        # A call names a model of the catalog, and a catalog with models always has a router.
        if self.router is None:
            raise RuntimeError("no model is configured")
        return self.router

    async def _complete(
        self, spec: ModelSpec, messages: Messages, kwargs: dict[str, Any], limit: float, result: CallResult
    ) -> None:
        response = await self._router().acompletion(
            model=spec.name, messages=provider_messages(messages), timeout=limit, **kwargs
        )
        choice = response.choices[0]
        result.text = choice.message.content or ""
        result.finish_reason = choice.finish_reason
        usage = getattr(response, "usage", None)
        result.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        result.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
        result.cost_usd = float(cost) if cost else spec.cost(result.prompt_tokens, result.completion_tokens)

    async def _stream(
        self,
        spec: ModelSpec,
        messages: Messages,
        kwargs: dict[str, Any],
        limit: float,
        result: CallResult,
        on_delta: Delta,
    ) -> None:
        response = await self._router().acompletion(
            model=spec.name,
            messages=provider_messages(messages),
            timeout=limit,
            stream=True,
            stream_options={"include_usage": True},
            **kwargs,
        )
        parts: list[str] = []
        try:
            async for chunk in response:
                usage = getattr(chunk, "usage", None)
                if usage is not None:
                    result.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
                    result.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                if choice.finish_reason:
                    result.finish_reason = choice.finish_reason
                piece = getattr(choice.delta, "content", None)
                if piece:
                    parts.append(piece)
                    await on_delta(piece)
        finally:
            result.text = "".join(parts)
        if result.finish_reason is None:
            raise ConnectionError("the stream ended before the model finished")
        result.cost_usd = spec.cost(result.prompt_tokens, result.completion_tokens)
