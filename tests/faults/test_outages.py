"""Outages under traffic on the whole stack: Redis gone (nothing fails, health warns, Redis used
again by itself) and a service killed (its prefix is a quick 503, the rest keeps working, and it is
routed to again when it is back)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.conftest import TEST_REDIS_URL, redis_prefix
from tests.faults.proxy import FaultProxy
from tests.faults.test_database_redis_faults import _proxy_for
from tests.support.logs import read, wait_for_log
from tests.support.users import bearer, login, register

pytestmark = pytest.mark.e2e


async def _traffic(client: httpx.AsyncClient, token: str, doc_id: str, seconds: float) -> list[tuple[str, int]]:
    """A mix of logins-free reads and writes for ``seconds``; every (path, status) seen."""
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + seconds
    auth = bearer(token)
    while time.monotonic() < deadline:
        batch = await asyncio.gather(
            client.get("/api/v1/auth/me", headers=auth),
            client.get("/api/v1/documents", headers=auth),
            client.get(f"/api/v1/documents/{doc_id}", headers=auth),
            client.get("/api/v1/llm/models", headers=auth),
            client.get("/health"),
        )
        seen += [(r.request.url.path, r.status_code) for r in batch]
    return seen


async def test_redis_stopped_under_traffic_fails_no_request(make_stack) -> None:
    if not TEST_REDIS_URL:
        pytest.skip("needs TEST_REDIS_URL (Redis) to break")
    proxy: FaultProxy = _proxy_for(TEST_REDIS_URL)
    try:
        st = await make_stack(env={"REDIS_URL": proxy.url_for(TEST_REDIS_URL), "REDIS_KEY_PREFIX": redis_prefix("out")})
        async with httpx.AsyncClient(base_url=st.url("gateway"), timeout=30) as client:
            email = await register(client)
            token = (await login(client, email))["access_token"]
            up = await client.post(
                "/api/v1/documents", headers=bearer(token), files={"file": ("a.txt", b"hello outage", "text/plain")}
            )
            doc_id = up.json()["id"]
            before = await _traffic(client, token, doc_id, 1.0)
            proxy.set("down")
            during = await _traffic(client, token, doc_id, 3.0)
            # logging in and refreshing (rate limits, revocation) still work without Redis
            relog = await login(client, email)
            health = (await client.get("/health")).json()
            proxy.set("pass")
            started = time.monotonic()
            recovered = None
            while time.monotonic() - started < 10:
                checks = [
                    (await client.get(st.url(n) + "/health")).json() for n in ("gateway", "auth", "documents", "llm")
                ]
                if all(c["checks"]["redis:responseTime"][0]["status"] == "pass" for c in checks):
                    recovered = True
                    break
                await asyncio.sleep(0.1)
            after = await _traffic(client, token, doc_id, 1.0)
    finally:
        proxy.close()
    for phase, seen in (("before", before), ("during", during), ("after", after)):
        failed = [(p, s) for p, s in seen if s != 200]
        assert not failed, (phase, failed[:10])
    assert relog["access_token"]
    assert health["status"] == "warn"  # degraded, not failed
    assert during  # there was traffic while Redis was down
    assert recovered is not None  # every service uses Redis again by itself


async def test_a_killed_service_is_a_quick_503_and_comes_back(make_stack) -> None:
    st = await make_stack()
    async with httpx.AsyncClient(base_url=st.url("gateway"), timeout=30) as client:
        token = (await login(client, await register(client)))["access_token"]
        # llm has not seen a token yet: it fetched the keys at start-up, so it can verify without auth
        assert (await client.get("/api/v1/documents", headers=bearer(token))).status_code == 200

        st.procs["auth"].kill()
        gateway_log = st.workdir / "gateway.log"
        since = len(read(gateway_log))
        down = await client.post("/api/v1/auth/login", json={"email": "a@b.io", "password": "whatever pass"})
        assert down.status_code == 503
        assert down.json()["service"] == "auth"
        assert down.headers["retry-after"]
        # Quick because nothing listens: the connection is refused and answered at once, not waited
        # out until a timeout (that would be a 504). The 503's time is a figure of bench/bench_faults.py.
        await wait_for_log(gateway_log, "upstream auth unavailable: ClientConnectorError", since=since)
        # Every other prefix keeps working: tokens are verified with the cached public keys.
        assert (await client.get("/api/v1/documents", headers=bearer(token))).status_code == 200
        assert (await client.get("/api/v1/llm/models", headers=bearer(token))).status_code == 200

        await asyncio.to_thread(st.start, "auth")
        again = await client.get("/api/v1/auth/me", headers=bearer(token))
        assert again.status_code == 200, again.text
