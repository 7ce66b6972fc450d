"""Login throttling (OWASP ASVS, anti-automation): per client address and per account, checked
before any hashing, 429 with Retry-After, no lockout an attacker can impose on the owner, no
X-Forwarded-For spoofing, exact counts under concurrency, Redis outages, and a bound on hashing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from redis.asyncio import Redis

from shared.ratelimit import RateLimiter
from tests.conftest import redis_prefix
from tests.support.users import PASSWORD, new_email, register, register_and_login

LOGIN = "/api/v1/auth/login"


WRONG = "wrong password!"


def attempt(client, email: str, password: str = WRONG, address: str | None = None):
    headers = {"X-Forwarded-For": address} if address else {}
    return client.post(LOGIN, json={"email": email, "password": password}, headers=headers)


async def test_per_address_limit_answers_429_with_retry_after_before_hashing(auth_client) -> None:
    async with auth_client(login_rate_per_address="3/minute") as client:
        email = await register(client)
        for _ in range(3):
            assert (await attempt(client, email)).status_code == 401
        work = client.app.state.passwords.calls
        refused = await attempt(client, email, PASSWORD)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["content-type"] == "application/problem+json"
        assert client.app.state.passwords.calls == work  # no hashing for a refused attempt


async def test_per_account_limit_holds_across_many_addresses(auth_client) -> None:
    # The in-process client is a trusted proxy here, so each attempt comes from another address.
    async with auth_client(login_attempts_per_account="3/15 minutes", trusted_proxies="203.0.113.7/32") as client:
        email = await register(client)
        for i in range(3):
            assert (await attempt(client, email, address=f"198.51.100.{i}")).status_code == 401
        work = client.app.state.passwords.calls
        refused = await attempt(client, email, PASSWORD, address="198.51.100.99")
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert client.app.state.passwords.calls == work


async def test_unknown_accounts_are_throttled_the_same_way(auth_client) -> None:
    async with auth_client(login_attempts_per_account="2/15 minutes") as client:
        ghost = new_email("ghost")
        codes = [(await attempt(client, ghost)).status_code for _ in range(3)]
        assert codes == [401, 401, 429]  # no hint whether the account exists


async def test_the_owner_is_not_locked_out_by_an_attacker(auth_client) -> None:
    async with auth_client(login_attempts_per_account="3/15 minutes", trusted_proxies="203.0.113.7/32") as client:
        email = await register(client)
        owner = "192.0.2.10"
        assert (await attempt(client, email, PASSWORD, address=owner)).status_code == 200
        for i in range(6):
            await attempt(client, email, address=f"198.51.100.{i}")
        assert (await attempt(client, email, PASSWORD, address="198.51.100.77")).status_code == 429
        # The owner's address has logged in before: it is exempt from the account's limit.
        assert (await attempt(client, email, PASSWORD, address=owner)).status_code == 200


async def test_a_client_set_forwarded_for_does_not_evade_the_address_limit(auth_client) -> None:
    # 203.0.113.7 is not a trusted proxy: what it claims in X-Forwarded-For is ignored.
    async with auth_client(login_rate_per_address="3/minute") as client:
        email = await register(client)
        codes = [(await attempt(client, email, address=f"10.0.0.{i}")).status_code for i in range(4)]
        assert codes == [401, 401, 401, 429]


async def test_concurrent_hits_never_exceed_the_limit_across_instances(redis_url) -> None:
    prefix = redis_prefix("limits")
    # Fifty first hits dial up to fifty connections at once: on a loaded machine one connect can
    # outlast the default half second, and a slow Redis is rightly a 503 (test_redis_client_errors).
    # This test is about the count across instances, so it gives Redis time.
    instances = [RateLimiter(redis_url, prefix=prefix, timeout=5.0) for _ in range(2 if redis_url else 1)]
    try:
        limit = 10
        results = await asyncio.gather(
            *(instances[i % len(instances)].hit(f"{limit}/minute", "burst", "one") for i in range(5 * limit))
        )
        assert sum(d.allowed for d in results) == limit
        assert all(d.retry_after >= 1 for d in results if not d.allowed)
    finally:
        for limiter in instances:
            await limiter.close()


async def test_redis_down_falls_back_to_limits_in_process() -> None:
    limiter = RateLimiter("redis://127.0.0.1:1/0", prefix=redis_prefix("down"), timeout=0.2)
    try:
        # The storage is redis-py's asyncio client: nothing blocks the event loop.
        assert isinstance(limiter._storage.bridge.storage, Redis)
        decisions = [await limiter.hit("2/minute", "down", "x") for _ in range(3)]
        assert [d.allowed for d in decisions] == [True, True, False]
    finally:
        await limiter.close()


async def test_login_keeps_working_and_throttling_with_redis_down(auth_client) -> None:
    async with auth_client(
        redis_url="redis://127.0.0.1:1/0", redis_timeout=0.2, login_rate_per_address="2/minute"
    ) as c:
        email = await register(c)
        assert (await attempt(c, email, PASSWORD)).status_code == 200
        assert (await attempt(c, email)).status_code == 401
        assert (await attempt(c, email, PASSWORD)).status_code == 429


@pytest.mark.slow
async def test_a_login_flood_beyond_the_hash_queue_gets_503_not_unbounded_work(auth_client) -> None:
    settings = {
        "hash_concurrency": 1,
        "hash_queue": 2,
        "argon2_memory_kib": 8192,
        "argon2_time_cost": 2,
        "login_attempts_per_account": "100/minute",
    }
    async with auth_client(**settings) as client:
        email = await register(client)
        answers = await asyncio.gather(*(attempt(client, email, PASSWORD) for _ in range(12)))
        codes = [r.status_code for r in answers]
        assert set(codes) <= {200, 503}, codes
        assert codes.count(200) >= 1 and codes.count(503) >= 1, codes
        busy = next(r for r in answers if r.status_code == 503)
        assert busy.headers["retry-after"] == "2"


@asynccontextmanager
async def hashing_thread_held(client) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """The app's hashing thread (HASH_CONCURRENCY=1) kept busy until the block ends; yields a wait
    that returns once a request has asked for a hash, and so is queued behind it."""
    passwords = client.app.state.passwords
    gate = threading.Event()
    busy = asyncio.get_running_loop().run_in_executor(passwords.pool, gate.wait, 30)
    started = passwords.calls

    async def queued() -> None:
        async def asked() -> None:
            while passwords.calls == started:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(asked(), 10)

    try:
        yield queued
    finally:
        gate.set()
        await busy


async def test_a_login_waiting_for_its_hash_holds_no_database_connection(auth_client, pg_databases) -> None:
    """A login flood must not take the database from every other request: with one pooled
    connection and the only hashing thread busy, a login queued for its hash has given its
    connection back, and a refresh is answered meanwhile (it waited for the pool, then 503, before)."""
    if pg_databases is None:
        pytest.skip("the connection pool's limits are PostgreSQL's (TEST_DATABASE_URL)")
    settings = {"hash_concurrency": 1, "db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout": 2}
    async with auth_client(**settings) as client:
        email, tokens = await register_and_login(client)
        async with hashing_thread_held(client) as queued_for_a_hash:
            login = asyncio.create_task(attempt(client, email, PASSWORD))
            await queued_for_a_hash()
            refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
            assert refreshed.status_code == 200, refreshed.text
        assert (await login).status_code == 200


@pytest.mark.parametrize("operation", ["password change", "account deletion"])
async def test_a_password_check_waiting_for_its_hash_holds_no_database_connection(
    auth_client, pg_databases, operation: str
) -> None:
    """As for a login: a password change or an account deletion confirmed with the password gives
    its connection back before its hash, so other requests are served while it waits."""
    if pg_databases is None:
        pytest.skip("the connection pool's limits are PostgreSQL's (TEST_DATABASE_URL)")
    settings = {"hash_concurrency": 1, "db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout": 2}
    async with auth_client(**settings) as client:
        _, owner = await register_and_login(client)
        _, other = await register_and_login(client)
        headers = {"Authorization": f"Bearer {owner['access_token']}"}
        if operation == "password change":
            body = {"current_password": PASSWORD, "new_password": "another long passphrase 42"}
            request = client.post("/api/v1/auth/password", json=body, headers=headers)
        else:
            request = client.request("DELETE", "/api/v1/auth/me", json={"password": PASSWORD}, headers=headers)
        async with hashing_thread_held(client) as queued_for_a_hash:
            change = asyncio.create_task(request)
            await queued_for_a_hash()
            refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]})
            assert refreshed.status_code == 200, refreshed.text
        assert (await change).status_code == 204
        # and it did what it says: the owner's sessions are over
        assert (await client.get("/api/v1/auth/me", headers=headers)).status_code == 401


async def test_hashing_threads_run_below_the_event_loops_priority(auth_client) -> None:
    import os
    import threading

    if not hasattr(os, "setpriority"):
        pytest.skip("no per-thread priorities on this platform")
    async with auth_client(hash_thread_nice=10) as client:
        pool = client.app.state.passwords.pool
        loop_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        hasher_nice = await asyncio.get_running_loop().run_in_executor(
            pool, lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        )
    assert hasher_nice == min(19, loop_nice + 10)
