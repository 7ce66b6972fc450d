"""Test infrastructure shared by every suite.

Backends: SQLite and in-process cache always; PostgreSQL and Redis as well when TEST_DATABASE_URL and
TEST_REDIS_URL are set (CI sets both). Under CI=true an unreachable PostgreSQL or Redis fails the run
instead of skipping: the suite must really run against both. Each test session creates its own
databases (random names) and drops them, and keeps its Redis keys under its own prefix.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tools.stack import Stack

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL") or None
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL") or None
SESSION_TAG = secrets.token_hex(4)


def _admin_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://").replace("postgres://", "postgresql://")


async def _pg_reachable(url: str) -> str | None:
    import asyncpg

    try:
        conn = await asyncpg.connect(_admin_dsn(url), timeout=5)
        await conn.close()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


async def _redis_reachable(url: str) -> str | None:
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=3)
    try:
        await client.ping()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await client.aclose()


def pytest_sessionstart(session: pytest.Session) -> None:
    if not CI:
        return
    missing = []
    if not TEST_DATABASE_URL:
        missing.append("TEST_DATABASE_URL is not set")
    if not TEST_REDIS_URL:
        missing.append("TEST_REDIS_URL is not set")
    if TEST_DATABASE_URL and (err := asyncio.run(_pg_reachable(TEST_DATABASE_URL))):
        missing.append(f"PostgreSQL at TEST_DATABASE_URL is unreachable ({err})")
    if TEST_REDIS_URL and (err := asyncio.run(_redis_reachable(TEST_REDIS_URL))):
        missing.append(f"Redis at TEST_REDIS_URL is unreachable ({err})")
    if missing:
        pytest.exit("CI=true needs PostgreSQL and Redis: " + "; ".join(missing), returncode=3)


class PostgresDatabases:
    """Creates databases with random names on the test server and drops them all at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = _admin_dsn(admin_url)
        self.created: list[str] = []

    async def create(self, label: str = "db") -> str:
        import asyncpg

        name = f"ultrai_{label}_{SESSION_TAG}_{secrets.token_hex(3)}"
        conn = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{name}"

    async def drop_all(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            for name in self.created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
async def pg_databases() -> AsyncIterator[PostgresDatabases | None]:
    if not TEST_DATABASE_URL:
        yield None
        return
    dbs = PostgresDatabases(TEST_DATABASE_URL)
    yield dbs
    await dbs.drop_all()


@pytest.fixture(scope="session")
async def redis_url() -> AsyncIterator[str | None]:
    """The test Redis, if any; every key this session writes is under its own prefix, removed at the end."""
    yield TEST_REDIS_URL
    if TEST_REDIS_URL:
        from redis.asyncio import Redis

        client = Redis.from_url(TEST_REDIS_URL)
        try:
            async for key in client.scan_iter(match=f"test-{SESSION_TAG}*"):
                await client.delete(key)
            async for key in client.scan_iter(match=f"LIMITS:test-{SESSION_TAG}*"):
                await client.delete(key)
            # The analysis queue's keys (SAQ names them after the queue, under the prefix).
            async for key in client.scan_iter(match=f"saq:*test-{SESSION_TAG}*"):
                await client.delete(key)
        finally:
            await client.aclose()


def redis_prefix(label: str = "") -> str:
    return f"test-{SESSION_TAG}{('-' + label) if label else ''}-{secrets.token_hex(3)}"


@pytest.fixture(scope="session")
def fake_provider() -> Iterator[FakeOpenAI]:
    """The fake OpenAI-compatible provider on loopback, one for the session; the stacks that need a
    provider point their models file at it. Every test that uses it starts with it reset."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_fake_provider(request: pytest.FixtureRequest) -> None:
    """Behaviours and recorded requests do not outlive the test that set them: a delay or a failure
    set by one test must not reach the next. Only tests that use the fake (directly or through a
    stack built on it) start it."""
    if "fake_provider" in request.fixturenames:
        request.getfixturevalue("fake_provider").reset()


@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ultrai-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def stack_env(pg_databases: PostgresDatabases | None, redis: str | None, label: str) -> dict[str, str]:
    """Env for a whole stack: on CI one PostgreSQL database (each service in its own schema, as on
    Render) and Redis under a fresh prefix; locally the embedded defaults."""
    # The whole suite talks to the gateway from one address: its per-address budget would be the
    # suite's, not a client's. The rate-limit tests set their own limits.
    env: dict[str, str] = {"RATE_LIMIT_PER_MINUTE": "100000", "RATE_LIMIT_PER_HOUR": "1000000"}
    # Deleted accounts are erased within a second or two, not a minute (tests/e2e/test_account_erasure.py).
    env["ERASURE_POLL_SECONDS"] = "1"
    if pg_databases is not None:
        env["DATABASE_URL"] = await pg_databases.create(label)
    if redis:
        env["REDIS_URL"] = redis
        env["REDIS_KEY_PREFIX"] = redis_prefix(label)
    return env


@asynccontextmanager
async def running_stack(
    env: dict[str, str],
    *,
    names: tuple[str, ...] | None = None,
    per_service_env: dict[str, dict[str, str]] | None = None,
    files: Callable[[Path], dict[str, str]] | None = None,
) -> AsyncIterator[Stack]:
    """Services as real processes on loopback in a scratch folder, stopped and removed afterwards.
    ``files(workdir)`` writes what the stack needs there (a models file) and returns more env."""
    workdir = Path(tempfile.mkdtemp(prefix="ultrai-stack-"))
    st = Stack(workdir, {**env, **(files(workdir) if files else {})}, names=names)
    st.per_service_env.update(per_service_env or {})
    try:
        await asyncio.to_thread(st.start_all)
        yield st
    finally:
        st.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
async def stack(pg_databases: PostgresDatabases | None, redis_url: str | None) -> AsyncIterator[Stack]:
    """The four services as real processes on loopback, shared by the end-to-end tests that leave it
    as they found it. Tests that stop services start their own with ``make_stack``."""
    async with running_stack(await stack_env(pg_databases, redis_url, "stack")) as st:
        yield st


@pytest.fixture
async def make_stack(pg_databases: PostgresDatabases | None, redis_url: str | None) -> AsyncIterator:
    """Factory for a private stack (for tests that stop or break services)."""
    async with AsyncExitStack() as stacks:

        async def factory(names: tuple[str, ...] | None = None, env: dict[str, str] | None = None) -> Stack:
            base = await stack_env(pg_databases, redis_url, "private")
            return await stacks.enter_async_context(running_stack({**base, **(env or {})}, names=names))

        yield factory
