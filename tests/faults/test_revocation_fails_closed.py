"""A logged-out token is never accepted again, whatever Redis is doing.

Busy: every service's Redis pool is made small and its bounded wait short, then another user sends
500 requests at once while the revoked token is tried at the gateway and at each service directly;
the pools saturate (the services count it in ``kv_busy_total``) and the token is accepted 0 times.
Stopped: Redis goes away before the logout; the services ask auth instead, and the token is
refused again everywhere; when Redis is back, auth writes the revocation it could not write.
"""

from __future__ import annotations

import asyncio
import base64
import json
from urllib.parse import urlsplit

import httpx
import pytest
from redis.asyncio import Redis

from tests.conftest import TEST_REDIS_URL, redis_prefix
from tests.faults.proxy import FaultProxy
from tests.support.users import bearer, register_and_login
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

PROTECTED = {"gateway": "/api/v1/documents", "documents": "/api/v1/documents", "llm": "/api/v1/llm/models"}


def _claims(token: str) -> dict[str, str]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def _logout(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    resp = await client.post(
        "/api/v1/auth/logout",
        json={"refresh_token": tokens["refresh_token"]},
        headers=bearer(tokens["access_token"]),
    )
    assert resp.status_code == 204, resp.text


async def _tries(clients: dict[str, httpx.AsyncClient], token: str, rounds: int) -> dict[str, list[int]]:
    """The revoked token tried ``rounds`` times at the gateway and at each service directly."""
    results: dict[str, list[int]] = {name: [] for name in clients}

    async def one(name: str) -> None:
        resp = await clients[name].get(PROTECTED[name], headers=bearer(token))
        results[name].append(resp.status_code)

    await asyncio.gather(*(one(name) for _ in range(rounds) for name in clients))
    return results


def _accepted(results: dict[str, list[int]]) -> dict[str, int]:
    return {name: sum(1 for code in codes if code < 400) for name, codes in results.items()}


async def _busy_count(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("kv_busy_total{"))


async def test_revoked_token_is_refused_while_the_redis_pools_are_saturated(make_stack) -> None:
    if not TEST_REDIS_URL:
        pytest.skip("needs TEST_REDIS_URL (Redis) to saturate")
    st = await make_stack(env={"REDIS_MAX_CONNECTIONS": "2", "REDIS_POOL_TIMEOUT": "0.02"})
    # A connection per request: under a 500-request burst on a loaded machine, reusing a keep-alive
    # connection the server is closing at that moment (its idle timeout) ends a request with no
    # answer, which is HTTP/1.1's own race and not what this test is about.
    fresh = httpx.Limits(max_keepalive_connections=0)
    clients = {name: httpx.AsyncClient(base_url=st.url(name), timeout=60, limits=fresh) for name in PROTECTED}
    try:
        gateway = clients["gateway"]
        _, revoked = await register_and_login(gateway)
        _, other = await register_and_login(gateway)
        await _logout(gateway, revoked)

        async def load(client: httpx.AsyncClient, path: str) -> int:
            return (await client.get(path, headers=bearer(other["access_token"]))).status_code

        # 500 requests from another user, spread over the gateway and the two services, with the
        # revoked token tried 47 times at each of the three in the middle of them.
        burst = [load(clients[name], PROTECTED[name]) for name in PROTECTED for _ in range(500 // len(PROTECTED))]
        other_codes, tried = await asyncio.gather(asyncio.gather(*burst), _tries(clients, revoked["access_token"], 47))
        assert _accepted(tried) == {"gateway": 0, "documents": 0, "llm": 0}, tried
        assert all(code in (401, 503) for codes in tried.values() for code in codes), tried
        # The pools really were saturated (otherwise this test proves nothing), and the other user
        # was mostly served.
        busy = sum([await _busy_count(clients[name]) for name in PROTECTED])
        assert busy > 0, "no Redis pool was ever busy: the burst did not saturate it"
        assert sum(1 for code in other_codes if code == 200) > 0
        print(
            f"\nrevoked token under a saturated Redis pool: accepted {_accepted(tried)} of 47 each; "
            f"busy pool waits {busy:.0f}; other user's answers "
            f"{ {c: other_codes.count(c) for c in sorted(set(other_codes))} }"
        )
    finally:
        for client in clients.values():
            await client.aclose()


async def test_revoked_token_is_refused_while_redis_is_stopped(make_stack) -> None:
    if not TEST_REDIS_URL:
        pytest.skip("needs TEST_REDIS_URL (Redis) to stop")
    parts = urlsplit(TEST_REDIS_URL)
    proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    prefix = redis_prefix("stopped")
    clients: dict[str, httpx.AsyncClient] = {}
    try:
        st = await make_stack(env={"REDIS_URL": proxy.url_for(TEST_REDIS_URL), "REDIS_KEY_PREFIX": prefix})
        clients = {name: httpx.AsyncClient(base_url=st.url(name), timeout=30) for name in PROTECTED}
        gateway = clients["gateway"]
        _, revoked = await register_and_login(gateway)
        token = revoked["access_token"]
        assert _accepted(await _tries(clients, token, 1)) == {"gateway": 1, "documents": 1, "llm": 1}

        proxy.set("down")
        await _logout(gateway, revoked)
        during = await _tries(clients, token, 20)
        assert _accepted(during) == {"gateway": 0, "documents": 0, "llm": 0}, during

        proxy.set("pass")
        # Auth writes what it could not write while Redis was away...
        jti_key = f"{prefix}:revoked:jti:{_claims(token)['jti']}"
        redis = Redis.from_url(TEST_REDIS_URL)
        try:
            await eventually(lambda: redis.exists(jti_key), bool, timeout=15, what="the revocation written to Redis")
        finally:
            await redis.aclose()
        # ...and the token stays refused everywhere.
        after = await _tries(clients, token, 5)
        assert _accepted(after) == {"gateway": 0, "documents": 0, "llm": 0}, after
    finally:
        for client in clients.values():
            await client.aclose()
        proxy.close()
