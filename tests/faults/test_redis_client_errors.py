"""Redis broken under the services' real event loop (uvloop): a write to a connection that Redis
dropped raises RuntimeError from uvloop, not a RedisError. Neither the key-value store nor the rate
limiter may let it through as a 500."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

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
