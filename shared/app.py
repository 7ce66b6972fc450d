"""The application factory every service starts from: one place for the conventions of docs/architecture.md."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from starlette.middleware import Middleware

from shared import __version__, tracing
from shared.errors import Problem, install_error_handlers
from shared.health import HealthRegistry
from shared.kv import KeyValue
from shared.logs import configure_logging
from shared.memory import return_memory_every, tune_allocator
from shared.metrics import metrics_router
from shared.middleware import RequestContextMiddleware
from shared.settings import DatabaseSettings, ServiceSettings

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
T = TypeVar("T")


def create_app(
    service: str,
    settings: ServiceSettings,
    *,
    description: str,
    directory: dict[str, str],
    api_prefix: str | None = None,
    lifespan: Lifespan | None = None,
    max_body_size: int | None = 1_048_576,
    body_limits: dict[str, int | None] | None = None,
    version: str = __version__,
    database: bool = False,
    migrations: Path | None = None,
    middleware: list[Middleware] | None = None,
    outer_middleware: list[Middleware] | None = None,
) -> FastAPI:
    """A FastAPI app with logging, request ids, problem+json errors, health, metrics and ``GET /``.

    ``max_body_size`` caps every request body (bytes counted as they arrive); ``body_limits`` sets
    other caps by path prefix (an upload route, or None for no cap).
    ``directory`` maps the service's API paths to a short description (shown at ``GET /``, and at
    ``GET <api_prefix>`` when the service has one).
    ``lifespan`` opens and closes the service's own resources and may add health checks to
    ``app.state.health``. Every app gets ``app.state.kv`` (Redis with in-process fallback); with
    ``database=True`` also ``app.state.db`` (needs the shared package's ``db`` extra). With
    ``migrations`` (the service's Alembic scripts) the database is migrated before ``lifespan`` runs,
    where the settings say so (``DatabaseSettings.migrates_on_start``).
    ``middleware`` runs inside the request-context layer (request id, security headers, body caps);
    ``outer_middleware`` outside it, so it also sees the answers that layer makes itself (413, 431,
    500): the gateway's CORS headers go there.
    Routes answer with or without one trailing slash, never with a redirect (``shared.middleware``).
    """
    database = database or migrations is not None
    configure_logging(service, settings.log_level, settings.json_logs)
    # Before any client or engine is made: they are instrumented as they are created.
    tracing.start(service)
    tune_allocator()
    health = HealthRegistry(service, version="1", description=description)
    app = FastAPI(
        title=f"UltrAI {service}",
        description=description,
        version=version,
        lifespan=_lifespan(service, settings, health, database=database, migrations=migrations, inner=lifespan),
        # The trailing slash is taken off before routing (shared.middleware); a redirect would name
        # the service's own address, which is not the one the client called.
        redirect_slashes=False,
        # FastAPI's own spans when traces are exported (shared.tracing sets a tracer provider, and
        # never a meter or logger provider). Said here rather than found out: otherwise FastAPI
        # asks OpenTelemetry for its three providers on every request.
        telemetry={"tracing": tracing.enabled(), "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.health = health
    # Metrics read when /metrics is scraped (shared.metrics.ScrapeSource), added by a lifespan.
    app.state.metric_sources = []
    app.state.service = service
    install_error_handlers(app)
    if database:
        from shared.db import install_db_error_handlers

        install_db_error_handlers(app)
    app.include_router(health.router())
    if settings.enable_metrics:
        app.include_router(metrics_router())
    _add_meta_routes(app, service, settings, version=version, directory=directory, api_prefix=api_prefix)
    _declare_common_problems(app, database=database, body_cap=max_body_size is not None or bool(body_limits))
    context = Middleware(
        RequestContextMiddleware,
        service=service,
        max_body_size=max_body_size,
        body_limits=body_limits,
        hsts=settings.is_production,
        metrics=settings.enable_metrics,
    )
    # Added last = outermost: request ids, security headers and metrics cover every response,
    # including those the service's own middleware (``middleware``) answers itself; only
    # ``outer_middleware`` wraps even those.
    for layer in [*reversed(middleware or []), context, *reversed(outer_middleware or [])]:
        app.add_middleware(layer.cls, *layer.args, **layer.kwargs)
    return app


def state_dependency(name: str, kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A dependency that gives ``app.state.<name>`` (what ``create_app`` or the lifespan put there) as
    a ``kind``, for a service's ``deps.py``:
    ``Settings = Annotated[AuthSettings, Depends(state_dependency("settings", AuthSettings))]``."""

    # A coroutine: FastAPI runs a plain function dependency in a worker thread, a hop per request.
    async def dependency(request: Request) -> T:
        value: T = getattr(request.app.state, name)
        return value

    dependency.__name__ = dependency.__qualname__ = f"app_state_{name}"
    return dependency


def _lifespan(
    service: str,
    settings: ServiceSettings,
    health: HealthRegistry,
    *,
    database: bool,
    migrations: Path | None,
    inner: Lifespan | None,
) -> Lifespan:
    """Opens what every app has (key-value store, database, migrations, the memory trimmer) around
    the service's own ``inner`` lifespan, and closes them after it."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        kv = KeyValue.for_settings(settings, service)
        app.state.kv = kv
        db = None
        if database:
            from shared.db import Database

            db = Database(settings, service)
            app.state.db = db
            health.add(db.health_check())
            if migrations is not None and isinstance(settings, DatabaseSettings) and settings.migrates_on_start:
                from shared.migrations import upgrade

                await asyncio.to_thread(upgrade, migrations, settings, service)
        health.add(kv.health_check())
        trimmer = asyncio.get_running_loop().create_task(return_memory_every(settings.memory_trim_seconds))
        try:
            if inner is None:
                yield
            else:
                async with inner(app):
                    yield
        finally:
            trimmer.cancel()
            await kv.close()
            if db is not None:
                await db.dispose()

    return run


def _add_meta_routes(
    app: FastAPI,
    service: str,
    settings: ServiceSettings,
    *,
    version: str,
    directory: dict[str, str],
    api_prefix: str | None,
) -> None:
    """``GET /`` (what the service is and serves) and, with ``api_prefix``, the API directory there."""
    index: dict[str, Any] = {
        "service": service,
        "version": version,
        "environment": settings.environment,
        "docs": "/docs",
        "openapi": "/openapi.json",
        "health": {"live": "/live", "ready": "/ready", "health": "/health"},
        "api": directory,
    }

    @app.get("/", summary="What this service is and what it serves", tags=["meta"])
    async def root() -> dict[str, Any]:
        return index

    if api_prefix is not None:
        listing = {"service": service, "api": directory}

        @app.get(api_prefix, summary=f"The {service} API directory", tags=["meta"], name="directory")
        async def directory_route() -> dict[str, Any]:
            return listing


def _declare_common_problems(app: FastAPI, *, database: bool, body_cap: bool) -> None:
    """Declare in OpenAPI the problem answers any route of this app can give, whatever its own
    code says: 400 (a body that cannot be parsed), 413 (over the body cap) and 422 on routes with
    a body; 503 on every route of a service whose database can be down."""
    from fastapi.openapi.utils import get_openapi

    from shared.errors import PROBLEM_JSON

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        problem_ref = {"$ref": "#/components/schemas/Problem"}
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}"))
        for path, item in schema.get("paths", {}).items():
            for op in item.values():
                if not isinstance(op, dict):
                    continue
                responses = op.setdefault("responses", {})
                codes = []
                if "requestBody" in op:
                    codes += ["400", "422"] + (["413"] if body_cap else [])
                if database and path not in ("/live", "/metrics", "/"):
                    codes.append("503")
                for code in codes:
                    responses.setdefault(
                        code,
                        {
                            "description": HTTPStatus(int(code)).phrase,
                            "content": {PROBLEM_JSON: {"schema": problem_ref}},
                        },
                    )
                # FastAPI declares its validation errors as application/json HTTPValidationError;
                # they are sent as problem+json (shared.errors), so that is what is declared.
                if "422" in responses:
                    responses["422"] = {
                        "description": "Validation failed",
                        "content": {PROBLEM_JSON: {"schema": problem_ref}},
                    }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
