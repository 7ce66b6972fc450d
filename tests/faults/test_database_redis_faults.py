"""PostgreSQL and Redis broken for real, between a running service and the server, through a
fault proxy: liveness holds, readiness and the routes that need the database answer 503
problem+json quickly, and everything recovers by itself when the link is back."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import TEST_REDIS_URL, redis_prefix
from tests.faults.proxy import FaultProxy
from tools.stack import SERVICES, ServiceProcess, free_port, service_env

pytestmark = pytest.mark.e2e


def _proxy_for(url: str) -> FaultProxy:
    parts = urlsplit(url)
    return FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432)


def _migrate(name: str, env: dict[str, str]) -> None:
    spec = SERVICES[name]
    subprocess.run(
        [sys.executable, "-m", f"ultrai_{name}.migrate"],
        cwd=spec.app_dir,
        env=service_env(spec, env),
        check=True,
        capture_output=True,
        timeout=120,
    )


def _wait_status(url: str, status: int, timeout: float = 10.0) -> float:
    """Poll until ``url`` answers ``status``; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if httpx.get(url, timeout=5).status_code == status:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} within {timeout} s")


@pytest.fixture
async def auth_behind_proxy(pg_databases, tmp_path) -> Iterator[tuple[ServiceProcess, FaultProxy]]:
    if pg_databases is None:
        pytest.skip("needs TEST_DATABASE_URL (PostgreSQL) to break")
    db_url = await pg_databases.create("fault")
    proxy = _proxy_for(db_url)
    env = {
        "DATABASE_URL": proxy.url_for(db_url),
        "DATA_DIR": str(tmp_path),
        "DB_POOL_TIMEOUT": "2",
        "DB_STATEMENT_TIMEOUT_MS": "3000",
        "LOG_LEVEL": "WARNING",
        # Reuse of a spent refresh token must be refused at once here (the rotation's atomicity is
        # under test, not the grace window for concurrent refreshes).
        "REFRESH_REUSE_INTERVAL_SECONDS": "0",
    }
    _migrate("auth", env)
    proc = ServiceProcess(SERVICES["auth"], free_port(), env=env, log_path=tmp_path / "auth.log").start()
    try:
        proc.wait_ready("/ready", timeout=60)
        yield proc, proxy
    finally:
        proc.stop()
        proxy.close()


@pytest.mark.parametrize("fault", ["down", "reset", "timeout"])
def test_postgres_fault_fails_readiness_not_liveness_and_recovers(auth_behind_proxy, fault: str) -> None:
    proc, proxy = auth_behind_proxy
    proxy.set(fault)
    ready = httpx.get(proc.url + "/ready", timeout=15)
    live = httpx.get(proc.url + "/live", timeout=5)
    assert live.status_code == 200
    assert ready.status_code == 503
    assert ready.headers["content-type"] == "application/health+json"
    assert ready.headers["retry-after"]
    assert ready.json()["checks"]["postgres:responseTime"][0]["status"] == "fail"

    proxy.set("pass")
    _wait_status(proc.url + "/ready", 200, timeout=15)  # fails the test if it never comes back


def test_postgres_latency_is_bounded_by_the_check_timeout(auth_behind_proxy) -> None:
    """With every answer of the database 3 s late, /ready does not wait for it (it would then say
    200): the check gives up at its own bound and says so. (How long /ready takes then is a figure
    of bench/bench_faults.py.)"""
    proc, proxy = auth_behind_proxy
    proxy.set("latency", latency=3.0)
    ready = httpx.get(proc.url + "/ready", timeout=15)
    assert ready.status_code == 503
    check = ready.json()["checks"]["postgres:responseTime"][0]
    assert check["status"] == "fail"
    # The check's bound (2 s) or the driver's own connect bound (DB_POOL_TIMEOUT, 2 s here) ended it.
    assert check["output"] in ("no answer within 2 s", "timed out"), check
    proxy.set("pass")
    _wait_status(proc.url + "/ready", 200, timeout=15)


@pytest.fixture
def redis_proxy() -> Iterator[FaultProxy]:
    if not TEST_REDIS_URL:
        pytest.skip("needs TEST_REDIS_URL (Redis) to break")
    proxy = _proxy_for(TEST_REDIS_URL)
    yield proxy
    proxy.close()


def test_redis_down_is_a_warning_and_comes_back_by_itself(redis_proxy, tmp_path) -> None:
    env = {
        "REDIS_URL": redis_proxy.url_for(TEST_REDIS_URL),
        "REDIS_KEY_PREFIX": redis_prefix("fault"),
        "DATA_DIR": str(tmp_path),
        "LOG_LEVEL": "WARNING",
    }
    proc = ServiceProcess(SERVICES["gateway"], free_port(), env=env, log_path=tmp_path / "gw.log").start()
    try:
        proc.wait_ready()
        assert httpx.get(proc.url + "/health", timeout=10).json()["checks"]["redis:responseTime"][0]["status"] == "pass"
        redis_proxy.set("down")
        health = httpx.get(proc.url + "/health", timeout=10)
        assert health.json()["checks"]["redis:responseTime"][0]["status"] == "warn"
        assert httpx.get(proc.url + "/ready", timeout=10).status_code == 200  # Redis is optional
        redis_proxy.set("pass")
        started = time.monotonic()
        while time.monotonic() - started < 10:
            body = httpx.get(proc.url + "/health", timeout=10).json()
            if body["checks"]["redis:responseTime"][0]["status"] == "pass":
                break
            time.sleep(0.1)
        assert body["checks"]["redis:responseTime"][0]["status"] == "pass"
    finally:
        proc.stop()


@pytest.mark.parametrize("fault", ["timeout", "reset"])
def test_refresh_cut_off_by_the_database_is_done_or_cleanly_failed(auth_behind_proxy, fault: str) -> None:
    """A rotation in flight when PostgreSQL goes away: if the client was told it failed, nothing
    was rotated (the same refresh token still works exactly once); never half-written."""
    proc, proxy = auth_behind_proxy
    email, password = "cut@example.com", "a database outage passphrase"
    with httpx.Client(base_url=proc.url, timeout=30) as client:
        assert client.post("/api/v1/auth/register", json={"email": email, "password": password}).status_code == 201
        tokens = client.post("/api/v1/auth/login", json={"email": email, "password": password}).json()
        proxy.set(fault)
        cut = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        proxy.set("pass")
        _wait_status(proc.url + "/ready", 200, timeout=15)
        retry = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        again = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert cut.status_code in (200, 503), cut.text
    assert cut.headers["content-type"].startswith("application/")
    if cut.status_code == 503:
        assert cut.headers["retry-after"]
        assert retry.status_code == 200, retry.text  # nothing was rotated: the token still works once
    else:
        assert retry.status_code == 401  # it was rotated: reusing it is refused
    assert again.status_code == 401  # and never twice
