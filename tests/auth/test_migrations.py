"""The auth migrations run with the one command the deploy uses, on SQLite and (when configured) on
PostgreSQL in the service's own schema; they downgrade and upgrade again, and match the models."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import Database, normalize_database_url
from shared.migrations import alembic_config, upgrade
from tools.stack import ROOT
from ultrai_auth.main import MIGRATIONS
from ultrai_auth.models import AuthBase
from ultrai_auth.settings import AuthSettings

TABLES = {"users", "sessions", "refresh_tokens", "signing_keys", "api_keys", "account_erasures", "alembic_version"}


def migrate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    full = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'services' / 'auth'}",
        "ENVIRONMENT": "test",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "ultrai_auth.migrate", *args],
        cwd=ROOT / "services" / "auth",
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def tables(url: str, schema: str | None) -> set[str]:
    engine = create_async_engine(normalize_database_url(url))
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names(schema=schema)))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request, tmp_dir, pg_databases) -> tuple[dict[str, str], str, str | None]:
    if request.param == "sqlite":
        return {"DATA_DIR": str(tmp_dir)}, f"sqlite:///{tmp_dir / 'auth.db'}", None
    if pg_databases is None:
        pytest.skip("TEST_DATABASE_URL is not set")
    url = await pg_databases.create("authmig")
    return {"DATABASE_URL": url, "DATA_DIR": str(tmp_dir)}, url, "auth"


async def drift(url: str, schema: str | None) -> list:
    """What alembic's autogenerate sees between the migrated database and the models (nothing, we hope)."""
    connect_args = {"server_settings": {"search_path": schema}} if schema else {}
    engine = create_async_engine(normalize_database_url(url), connect_args=connect_args)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), AuthBase.metadata
                )
            )
    finally:
        await engine.dispose()


def downgrade_to_base(env: dict[str, str]) -> None:
    db = Database(AuthSettings(environment="test", **{k.lower(): v for k, v in env.items()}), "auth")
    try:
        command.downgrade(alembic_config(MIGRATIONS, db), "base")
    finally:
        asyncio.run(db.dispose())


async def test_migrations_upgrade_downgrade_and_upgrade_again(database) -> None:
    env, url, schema = database
    up = await asyncio.to_thread(migrate, env)
    assert up.returncode == 0, up.stderr
    assert await tables(url, schema) == TABLES
    assert await drift(url, schema) == []
    await asyncio.to_thread(downgrade_to_base, env)
    assert await tables(url, schema) == {"alembic_version"}
    settings = AuthSettings(environment="test", **{k.lower(): v for k, v in env.items()})
    await asyncio.to_thread(upgrade, MIGRATIONS, settings, "auth")
    assert await tables(url, schema) == TABLES
