"""The gateway: routing, CORS, aggregated health and streaming pass-through to the services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from starlette.middleware import Middleware
from starlette.responses import Response

from shared.app import create_app
from shared.client import ServiceClient
from shared.errors import ProblemError
from shared.health import Check, CheckResult
from shared.net import client_address
from shared.ratelimit import RateLimiter
from shared.settings import load_settings
from shared.tokens import TokenVerifier
from ultrai_gateway.cors import ProblemCORSMiddleware
from ultrai_gateway.edge import check_edge
from ultrai_gateway.proxy import Upstream, forward, new_session
from ultrai_gateway.settings import GatewaySettings

SERVICE = "gateway"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

# Route prefix -> service. The path is forwarded unchanged: each service serves its own prefix, so
# a direct call and a call through the gateway look the same to it.
ROUTES: dict[str, tuple[str, ...]] = {
    "auth": ("/api/v1/auth", "/.well-known"),
    "documents": ("/api/v1/documents",),
    "llm": ("/api/v1/llm", "/v1"),
}
# Losing auth or documents loses a core path (fail); losing llm degrades analyses (warn).
CRITICAL = {"auth": True, "documents": True, "llm": False}


def build(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or load_settings(GatewaySettings, SERVICE)
    upstreams: dict[str, Upstream] = {}
    timeout = httpx.Timeout(
        connect=settings.upstream_connect_timeout,
        read=settings.upstream_read_timeout,
        write=settings.upstream_read_timeout,
        pool=settings.upstream_connect_timeout,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        urls = {"auth": settings.auth_url, "documents": settings.documents_url, "llm": settings.llm_url}
        session = new_session(
            settings.upstream_connect_timeout, settings.upstream_read_timeout, settings.upstream_max_connections
        )
        health_clients: list[ServiceClient] = []
        for name, prefixes in ROUTES.items():
            upstreams[name] = Upstream(name, prefixes, urls[name], session, CRITICAL[name], settings.proxies)
            client = ServiceClient(name, urls[name], timeout=timeout, max_connections=4)
            health_clients.append(client)
            app.state.health.add(_upstream_check(upstreams[name], client, settings.health_timeout))
        app.state.verifier = TokenVerifier(settings, SERVICE)
        app.state.verifier.start()
        app.state.limiter = RateLimiter(
            settings.redis_url, prefix=settings.redis_key_prefix, timeout=settings.redis_timeout, service=SERVICE
        )
        try:
            yield
        finally:
            await session.close()
            await asyncio.gather(*(c.aclose() for c in health_clients))
            await app.state.verifier.aclose()
            await app.state.limiter.close()

    app = create_app(
        SERVICE,
        settings,
        description="The one URL the frontend uses: routing, CORS, aggregated health, streaming pass-through.",
        directory={
            "/api/v1/auth/*": "accounts and tokens (auth service)",
            "/api/v1/documents/*": "documents and analyses (documents service)",
            "/api/v1/llm/*": "multi-model orchestration (llm service)",
            "/v1/*": "OpenAI-compatible API (llm service)",
            "/.well-known/jwks.json": "public signing keys (auth service)",
        },
        lifespan=lifespan,
        # Bodies stream through, counted as they pass; over the cap the gateway answers 413 itself.
        max_body_size=settings.max_body_bytes,
        body_limits={
            "/api/v1/documents": settings.max_upload_bytes + settings.upload_overhead_bytes,
            "/api/v1/documents/": settings.max_body_bytes,
        },
        middleware=[
            Middleware(
                ProblemCORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_origin_regex=settings.cors_origin_regex,
                # Credentials are only ever answered for an origin that is listed or matches the regex:
                # Starlette echoes the origin only then, and never "*" with credentials.
                allow_credentials=True,
                allow_methods=METHODS,
                allow_headers=["Authorization", "Content-Type", "X-Request-ID", "Accept", "Last-Event-ID"],
                expose_headers=["X-Request-ID", "Retry-After", "Location", "Content-Disposition"],
                max_age=600,
            )
        ],
    )

    for name, prefixes in ROUTES.items():
        for prefix in prefixes:
            _add_route(app, name, prefix, upstreams)

    return app


def _add_route(app: FastAPI, name: str, prefix: str, upstreams: dict[str, Upstream]) -> None:
    async def route(request: Request) -> Response:
        await check_rate(request)
        await check_edge(request, ROUTES[name])
        return await forward(request, upstreams[name])

    for path in (prefix, prefix + "/{path:path}"):
        app.add_api_route(path, route, methods=METHODS, include_in_schema=False, name=f"proxy_{name}_{path}")


async def check_rate(request: Request) -> None:
    """Per client address, before anything costs work (token checks included): 429 + Retry-After."""
    settings: GatewaySettings = request.app.state.settings
    limiter: RateLimiter = request.app.state.limiter
    address = client_address(request.scope, settings.proxies)
    for limit, per in ((settings.rate_limit_per_minute, "minute"), (settings.rate_limit_per_hour, "hour")):
        if not limit:
            continue
        decision = await limiter.hit(f"{limit}/{per}", "gateway", address)
        if not decision.allowed:
            raise ProblemError(
                429,
                f"Too many requests: the limit is {limit} per {per}; retry in {decision.retry_after} s.",
                headers={"Retry-After": str(decision.retry_after), "RateLimit-Policy": f"{limit};w={_WINDOW[per]}"},
            )


_WINDOW = {"minute": 60, "hour": 3600}


def _upstream_check(upstream: Upstream, client: ServiceClient, timeout: float) -> Check:
    affected = {"affectedEndpoints": [p + "/*" for p in upstream.prefixes]}

    async def probe() -> CheckResult:
        try:
            resp = await client.get("/health", timeout=timeout)
            body = resp.json()
        except httpx.TimeoutException:
            return CheckResult("fail", f"{upstream.name} did not answer in time", dict(affected))
        except (httpx.HTTPError, ValueError):
            return CheckResult("fail", f"{upstream.name} is unreachable", dict(affected))
        status = body.get("status") if isinstance(body, dict) else None
        if status not in ("pass", "warn", "fail"):
            status = "fail"
        extra: dict = {}
        checks = body.get("checks") if isinstance(body, dict) else None
        if isinstance(checks, dict):
            extra["checks"] = {
                key.split(":")[0]: entries[0].get("status")
                for key, entries in checks.items()
                if isinstance(entries, list) and entries and isinstance(entries[0], dict)
            }
        if status == "pass":
            return CheckResult("pass", None, extra)
        return CheckResult(status, f"{upstream.name} reports {status}", {**affected, **extra})

    return Check(
        upstream.name,
        probe,
        component_type="service",
        critical=upstream.critical,
        timeout=timeout + 0.5,
        readiness=False,
    )


app = build()
