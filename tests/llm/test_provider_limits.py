"""The deployment rpm check litellm runs before each provider request (ultrai_llm/provider_limits.py),
in process: over the limit it is litellm's RateLimitError; with Redis busy the call is let through
uncounted instead of failing (or being taken for the deployment's failure)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.ratelimit import RateLimiter
from tests.support.servers import silent_server
from ultrai_llm.engine_setup import RateLimitError
from ultrai_llm.provider_limits import ProviderLimits, deployment_rpm


def deployment(rpm: int | None, kid: str = "d1") -> dict:
    params = {"model": "openai/x", **({"rpm": rpm} if rpm is not None else {})}
    return {"model_name": "x", "litellm_params": params, "model_info": {"id": kid}}


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """An address that accepts connections and never answers: a Redis too busy to reply."""
    with silent_server() as address:
        yield f"redis://{address}/0"


def test_rpm_is_read_where_litellm_reads_it() -> None:
    assert deployment_rpm({"rpm": 3, "litellm_params": {"rpm": 5}}) == 3
    assert deployment_rpm(deployment(5)) == 5
    assert deployment_rpm({"litellm_params": {}, "model_info": {"rpm": 7}}) == 7
    assert deployment_rpm(deployment(None)) is None


async def test_over_the_limit_is_litellms_rate_limit_error() -> None:
    limiter = RateLimiter(None)
    check = ProviderLimits(limiter)
    try:
        assert await check.async_pre_call_check(deployment(2)) is not None
        assert await check.async_pre_call_check(deployment(2)) is not None
        with pytest.raises(RateLimitError):
            await check.async_pre_call_check(deployment(2))
        # Another deployment, and a deployment without a limit, are not held back.
        assert await check.async_pre_call_check(deployment(2, kid="d2")) is not None
        for _ in range(5):
            assert await check.async_pre_call_check(deployment(None)) is not None
    finally:
        await limiter.close()


async def test_a_busy_redis_lets_the_call_through(silent_redis: str) -> None:
    limiter = RateLimiter(silent_redis, timeout=0.2, pool_timeout=0.2)
    check = ProviderLimits(limiter)
    try:
        assert await check.async_pre_call_check(deployment(1)) is not None
    finally:
        await limiter.close()
