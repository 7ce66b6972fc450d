"""Auth test helpers: the auth app in process (httpx.ASGITransport with its lifespan), on SQLite and
in-process storage by default, on PostgreSQL and Redis when the test URLs are set.

argon2 runs at a low cost here (ARGON2_MEMORY_KIB=64, t=1) to keep the suite fast;
test_passwords.py checks that the production defaults are at least OWASP's. Accounts are made
with tests.support.users.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PostgresDatabases, redis_prefix
from ultrai_auth.main import build
from ultrai_auth.settings import AuthSettings

FAST_ARGON2 = {"argon2_memory_kib": 64, "argon2_time_cost": 1, "argon2_parallelism": 1}
# The in-process client's address (not a trusted proxy unless a test says so).
CLIENT = ("203.0.113.7", 50000)


@pytest.fixture
async def auth_env(tmp_dir: Path, pg_databases: PostgresDatabases | None, redis_url: str | None) -> dict[str, Any]:
    """Settings for one auth instance: a fresh database and Redis prefix of its own."""
    env: dict[str, Any] = {"environment": "test", "data_dir": tmp_dir, "log_format": "text", **FAST_ARGON2}
    if pg_databases is not None:
        env["database_url"] = await pg_databases.create("auth")
    if redis_url:
        env["redis_url"] = redis_url
        env["redis_key_prefix"] = redis_prefix("auth")
    return env


AuthClient = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def auth_client(auth_env: dict[str, Any]) -> AuthClient:
    """``async with auth_client(**overrides) as client``: the auth app in process, lifespan run."""

    @asynccontextmanager
    async def factory(client: tuple[str, int] = CLIENT, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = build(AuthSettings(**{**auth_env, **overrides}))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=client)
            async with httpx.AsyncClient(transport=transport, base_url="http://auth.test") as http:
                http.app = app  # type: ignore[attr-defined]
                yield http

    return factory
