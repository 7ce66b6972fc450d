"""Redis broken under the services' real event loop (uvloop): a write to a connection that Redis
dropped raises RuntimeError from uvloop, not a RedisError. Neither the key-value store nor the rate
limiter may let it through as a 500."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from shared.errors import ProblemError
from shared.kv import KeyValue
from shared.ratelimit import RateLimiter
from tests.conftest import TEST_REDIS_URL, redis_prefix
from tests.faults.test_database_redis_faults import _proxy_for


@pytest.fixture
def proxy():
    if not TEST_REDIS_URL:
        pytest.skip("needs TEST_REDIS_URL (Redis) to break")
    p = _proxy_for(TEST_REDIS_URL)
    yield p
    p.close()


@pytest.mark.parametrize("fault", ["down", "reset"])
def test_kv_survives_a_dropped_connection_on_uvloop(proxy, fault: str) -> None:
    async def scenario() -> list[bytes | None]:
        kv = KeyValue(proxy.url_for(TEST_REDIS_URL), service="t", prefix=redis_prefix("uv"))
        await kv.set("k", "v")
        proxy.set(fault)
        await asyncio.sleep(0.2)  # let the loop see the connection go, as an idle service would
        seen = [await kv.get("k"), await kv.get("k")]
        await kv.set("k2", "local")
        seen.append(await kv.get("k2"))
        proxy.set("pass")
        await asyncio.sleep(kv.retry_interval + 0.2)
        seen.append(await kv.get("k"))  # from Redis again: only Redis has "k"
        await kv.close()
        return seen

    assert uvloop.run(scenario())[-2:] == [b"local", b"v"]


@pytest.mark.parametrize("fault", ["down", "reset"])
def test_rate_limiter_survives_a_dropped_connection_on_uvloop(proxy, fault: str) -> None:
    async def scenario() -> list[bool]:
        limiter = RateLimiter(proxy.url_for(TEST_REDIS_URL), prefix=redis_prefix("uv"))
        first = await limiter.hit("5/minute", "t", "a")
        proxy.set(fault)
        await asyncio.sleep(0.2)
        after = [await limiter.hit("5/minute", "t", "a") for _ in range(3)]
        proxy.set("pass")
        await asyncio.sleep(limiter.retry_interval + 0.2)
        # Redis again: the first hit is still counted there, so 4 more fill the limit of 5.
        back = [await limiter.hit("5/minute", "t", "a") for _ in range(5)]
        await limiter.close()
        return [first.allowed] + [d.allowed for d in after] + [d.allowed for d in back]

    assert uvloop.run(scenario()) == [True] * 8 + [False]


def test_slow_redis_makes_rate_limits_refuse_not_turn_per_process(proxy) -> None:
    """A Redis that answers later than REDIS_TIMEOUT is busy, not gone: a limit that cannot be
    checked is a 503 with Retry-After, never an in-process guess (which would let every instance
    allow the whole limit again)."""

    async def scenario() -> tuple[list[int], list[bool], int]:
        limiter = RateLimiter(proxy.url_for(TEST_REDIS_URL), prefix=redis_prefix("slow"), timeout=0.2)
        first = [(await limiter.hit("3/minute", "t", "a")).allowed for _ in range(3)]
        proxy.set("latency", latency=0.6)
        refused = []
        for _ in range(3):
            try:
                await limiter.hit("3/minute", "t", "a")
            except ProblemError as exc:
                refused.append(exc.status)
        proxy.set("pass")
        await asyncio.sleep(0.7)  # replies that were late have arrived (and been dropped)
        again = await limiter.hit("3/minute", "t", "a")
        await limiter.close()
        return refused, first, int(again.allowed)

    refused, first, again = uvloop.run(scenario())
    assert first == [True, True, True]
    assert refused == [503, 503, 503]
    assert again == 0  # the limit was reached in Redis and is still reached: nothing was forgotten


def test_slow_redis_is_a_cache_miss_not_a_switch_to_process_memory(proxy) -> None:
    async def scenario() -> tuple[bytes | None, bool, bytes | None]:
        kv = KeyValue(proxy.url_for(TEST_REDIS_URL), service="t", prefix=redis_prefix("slow"), timeout=0.2)
        await kv.set("k", "v")
        proxy.set("latency", latency=0.6)
        during = await kv.get("k")
        down = kv.down
        proxy.set("pass")
        await asyncio.sleep(0.7)
        after = await kv.get("k")
        await kv.close()
        return during, down, after

    during, down, after = uvloop.run(scenario())
    assert during is None
    assert down is False
    assert after == b"v"
