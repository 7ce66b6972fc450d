"""Alembic migrations for every service, one way: each service keeps its migration scripts in its
package (``ultrai_<service>/migrations``) and runs them with ``python -m ultrai_<service>.migrate``,
which is what ``make migrate``, ``make dev``, the Render ``preDeployCommand`` and the tests run.

On PostgreSQL each service's tables and its ``alembic_version`` live in a schema of its own,
created by the first migration run; on SQLite each service has its own file.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, MetaData, pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import Database
from shared.settings import ServiceSettings


def alembic_config(script_location: Path, db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    cfg.attributes["schema"] = db.schema if db.postgres else None
    return cfg


def upgrade(script_location: Path, settings: ServiceSettings, service: str, revision: str = "head") -> None:
    db = Database(settings, service)
    try:
        command.upgrade(alembic_config(script_location, db), revision)
    finally:
        asyncio.run(db.dispose())


def main(script_location: Path, settings: ServiceSettings, service: str) -> int:
    revision = sys.argv[1] if len(sys.argv) > 1 else "head"
    upgrade(script_location, settings, service, revision)
    print(f"{service}: migrations at {revision}", flush=True)
    return 0


def run_env(target_metadata: MetaData) -> None:
    """The body of every service's ``migrations/env.py`` (online, async)."""
    from alembic import context

    config = context.config
    schema: str | None = config.attributes.get("schema")
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("alembic: sqlalchemy.url is not set")

    def do_run(connection: Connection) -> None:
        if schema:
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            connection.execute(text(f'SET search_path TO "{schema}"'))
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table_schema=schema,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        async with engine.connect() as connection:
            await connection.run_sync(do_run)
        await engine.dispose()

    asyncio.run(run())
