"""The async database engine and session factory (needs the ``db`` extra).

PostgreSQL through asyncpg, from any of the URL forms Render and others hand out
(``postgres://``, ``postgresql://``, ``postgresql+asyncpg://``); SQLite through aiosqlite when no
DATABASE_URL is set. Each service keeps its tables in a PostgreSQL schema of its own.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import Depends, FastAPI, Request, Response
from sqlalchemy import event, text
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from shared import tracing
from shared.errors import problem_response
from shared.health import Check
from shared.settings import ServiceSettings

log = logging.getLogger("shared.db")


def normalize_database_url(url: str) -> str:
    """Pick the async driver for a URL in any of its usual forms."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme in ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg", "postgresql+asyncpg"):
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        # libpq's sslmode is not an asyncpg argument; asyncpg calls it ssl.
        if "sslmode" in query:
            query["ssl"] = query.pop("sslmode")
        return urlunsplit(("postgresql+asyncpg", parts.netloc, parts.path, urlencode(query), parts.fragment))
    if scheme in ("sqlite", "sqlite+aiosqlite"):
        # urlunsplit would drop the empty authority of sqlite:///path, so swap the scheme only.
        return "sqlite+aiosqlite" + url.strip()[len(scheme) :]
    raise ValueError(f"unsupported database URL scheme {scheme!r} (use postgresql:// or sqlite:///)")


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


class Database:
    def __init__(self, settings: ServiceSettings, service: str, schema: str | None = None) -> None:
        self.service = service
        self.schema = schema or service
        if settings.database_url:
            self.url = normalize_database_url(settings.database_url)
        else:
            data = Path(settings.data_dir)
            data.mkdir(parents=True, exist_ok=True)
            self.url = f"sqlite+aiosqlite:///{(data / f'{service}.db').resolve()}"
        self.postgres = is_postgres(self.url)
        if self.postgres:
            self.engine: AsyncEngine = create_async_engine(
                self.url,
                pool_size=settings.db_pool_size,
                max_overflow=settings.db_max_overflow,
                pool_timeout=settings.db_pool_timeout,
                pool_recycle=settings.db_pool_recycle,
                pool_pre_ping=settings.db_pool_pre_ping,
                connect_args={
                    "timeout": settings.db_pool_timeout,
                    "command_timeout": max(settings.db_statement_timeout_ms / 1000, 1),
                    "server_settings": {
                        "search_path": self.schema,
                        "statement_timeout": str(settings.db_statement_timeout_ms),
                        "application_name": f"ultrai-{service}",
                    },
                },
            )
        else:
            self.engine = create_async_engine(self.url, connect_args={"timeout": 15})
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        tracing.instrument_engine(self.engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    def health_check(self) -> Check:
        async def probe() -> None:
            await self.ping()

        name = "postgres" if self.postgres else "sqlite"
        return Check(name, probe, component_type="datastore", critical=True, timeout=2.0)

    async def dispose(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


# Only what says the database cannot be reached: not every OSError (a missing file is a bug, and
# must not be reported as a database outage).
_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout, ConnectionError, TimeoutError, socket.gaierror)


def install_db_error_handlers(app: FastAPI) -> None:
    """A database that is down or saturated answers 503 with Retry-After, never a 500 or a hang."""

    async def unavailable(_: Request, exc: Exception) -> Response:
        log.warning("database unavailable: %s", type(exc).__name__)
        return problem_response(503, "The database is unavailable; try again shortly.", headers={"Retry-After": "5"})

    for exc_type in _UNAVAILABLE:
        app.add_exception_handler(exc_type, unavailable)

    async def bad_value(_: Request, exc: Exception) -> Response:
        # A value the database refuses to store or compare (a NUL character in text on
        # PostgreSQL, a number out of range): the client's input, so a 422, not a 500.
        orig = getattr(exc, "orig", None)
        log.info("database refused a value: %s", type(orig).__name__ if orig else "DataError")
        return problem_response(
            422, "The request contains a value that cannot be stored (for example a NUL character)."
        )

    async def dbapi(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DBAPIError)
        if exc.connection_invalidated or _looks_like_connection_error(exc):
            return await unavailable(request, exc)
        if str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None) or "").startswith("22"):
            return await bad_value(request, exc)  # SQLSTATE class 22: data exception
        log.error("database error: %s", type(exc.orig).__name__ if exc.orig else type(exc).__name__)
        return problem_response(500, "An internal error occurred; the request id identifies it in the logs.")

    app.add_exception_handler(DBAPIError, dbapi)

    app.add_exception_handler(DataError, bad_value)


def _looks_like_connection_error(exc: DBAPIError) -> bool:
    name = type(exc.orig).__name__ if exc.orig is not None else ""
    return any(word in name for word in ("Connection", "CannotConnect", "Shutdown", "AdminShutdown", "Timeout"))


class Repository:
    """The base of a service's repository: its queries run on one database session, and its callers
    decide where a transaction ends (``commit``, ``rollback``) and when the connection goes back to
    the pool before something slow (``release``)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @classmethod
    async def on_request(cls, session: DbSession) -> Self:
        """As a dependency (``Depends(AuthRepository.on_request)``): the repository on the request's
        database session."""
        return cls(session)

    async def commit(self) -> None:
        await self.session.commit()

    async def rollback(self) -> None:
        await self.session.rollback()

    async def release(self) -> None:
        """End the transaction and give the connection back to the pool (the session can be used
        again): before waiting on an upload, another service or a slow reader."""
        await self.session.close()


# ---- FastAPI dependencies ---------------------------------------------------------------------
def database_of(request: Request) -> Database:
    """The app's database (``create_app(..., database=True)`` opens it in the lifespan)."""
    db: Database = request.app.state.db
    return db


async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, closed after the response."""
    async with database_of(request).sessions() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(db_session)]
