"""A provider's requests-per-minute limit, kept by every instance of the service together.

A deployment in the models file may carry litellm's ``rpm`` (in ``litellm_params``, or beside
them or in ``model_info``). litellm's own accounting of it is per process, synced to Redis about
once a second, so N instances can together send up to N times the limit in a burst. This check
runs where litellm runs its pre-call checks, inside the Router's call to one deployment, right
before the request leaves (each retry and fallback is checked again): one atomic hit on the
shared moving-window limiter (shared/ratelimit.py: Redis when configured, this process
otherwise). Over the limit, it raises litellm's RateLimitError, which the Router treats as the
provider's own 429 (cooldown of the deployment, retry, fallback). When Redis is busy the call is
not counted (and goes ahead); when Redis is down the limiter counts in this process.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from shared.errors import ProblemError
from shared.ratelimit import RateLimiter
from ultrai_llm.engine_setup import CustomLogger, RateLimitError, litellm

WINDOW = "provider-rpm"
log = logging.getLogger("ultrai_llm.provider_limits")


def deployment_rpm(deployment: dict[str, Any]) -> int | None:
    """The deployment's requests per minute, where litellm reads it from, or None."""
    for source in (deployment, deployment.get("litellm_params") or {}, deployment.get("model_info") or {}):
        value = source.get("rpm")
        if value is not None:
            return int(value)
    return None


class ProviderLimits(CustomLogger):
    def __init__(self, limiter: RateLimiter) -> None:
        super().__init__()
        self.limiter = limiter

    async def async_pre_call_check(self, deployment: dict[str, Any], parent_otel_span: Any = None) -> dict[str, Any]:
        rpm = deployment_rpm(deployment)
        if rpm is None:
            return deployment
        deployment_id = str((deployment.get("model_info") or {}).get("id") or deployment.get("model_name"))
        try:
            decision = await self.limiter.hit(f"{rpm}/minute", WINDOW, deployment_id)
        except ProblemError:
            # Redis busy (no connection free, or too slow): the call goes ahead uncounted rather
            # than fail, or be taken by the Router for the deployment's failure (a cooldown); the
            # provider still enforces its own limit.
            log.warning("provider rpm not counted: the shared store is busy")
            return deployment
        if not decision.allowed:
            model = (deployment.get("litellm_params") or {}).get("model")
            message = (
                f"the deployment's limit of {rpm} requests per minute is reached (room again in "
                f"{decision.retry_after} s)"
            )
            # No Retry-After on the error: litellm would wait that long before its retry, holding
            # the request for up to a minute; the Router cools the deployment down instead.
            raise RateLimitError(
                message=message,
                llm_provider="",
                model=str(model),
                response=httpx.Response(429, request=httpx.Request("POST", "http://provider-limits.invalid")),
            )
        return deployment


def install(limiter: RateLimiter) -> ProviderLimits:
    """Put the check among litellm's callbacks (global to the process), replacing an earlier one."""
    litellm.callbacks[:] = [cb for cb in litellm.callbacks if not isinstance(cb, ProviderLimits)]
    check = ProviderLimits(limiter)
    litellm.callbacks.append(check)
    return check
