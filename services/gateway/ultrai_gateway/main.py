"""The gateway: routing, CORS, aggregated health and streaming pass-through to the services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from starlette.middleware import Middleware

from shared.app import Lifespan, create_app
from shared.client import ServiceClient
from shared.ratelimit import RateLimiter
from shared.settings import load_settings
from shared.tokens import TokenVerifier
from ultrai_gateway.cors import cors_middleware
from ultrai_gateway.deps import Gateway
from ultrai_gateway.health import upstream_check
from ultrai_gateway.proxy import Upstream, new_session
from ultrai_gateway.routes import METHODS, ProxyDispatch, ProxyTable
from ultrai_gateway.settings import GatewaySettings
from ultrai_gateway.slots import StreamSlots
from ultrai_gateway.websocket import add_websocket_routes

SERVICE = "gateway"

# Route prefix -> service. The path is forwarded unchanged: each service serves its own prefix, so
# a direct call and a call through the gateway look the same to it.
ROUTES: dict[str, tuple[str, ...]] = {
    "auth": ("/api/v1/auth", "/.well-known"),
    "documents": ("/api/v1/documents",),
    "llm": ("/api/v1/llm", "/v1"),
}
# Losing auth or documents loses a core path (fail); losing llm degrades analyses (warn).
CRITICAL = {"auth": True, "documents": True, "llm": False}
DIRECTORY = {
    "/api/v1/auth/*": "accounts and tokens (auth service)",
    "/api/v1/documents/*": "documents and analyses (documents service)",
    "/api/v1/llm/*": "multi-model orchestration (llm service)",
    "/v1/*": "OpenAI-compatible API (llm service)",
    "/.well-known/jwks.json": "public signing keys (auth service)",
}


def build(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or load_settings(GatewaySettings, SERVICE)
    gateway = Gateway(settings)
    cors = cors_middleware(settings, METHODS)
    proxied = ProxyTable(ROUTES, gateway)
    app = create_app(
        SERVICE,
        settings,
        description="The one URL the frontend uses: routing, CORS, aggregated health, streaming pass-through.",
        directory=DIRECTORY,
        lifespan=lifespan(gateway),
        # Bodies stream through, counted as they pass; over the cap the gateway answers 413 itself.
        max_body_size=settings.max_body_bytes,
        body_limits={
            "/api/v1/documents": settings.max_upload_bytes + settings.upload_overhead_bytes,
            "/api/v1/documents/": settings.max_body_bytes,
        },
        # CORS headers go on every answer, the ones made before routing included (cors.py). The
        # proxied requests are answered inside both, before FastAPI's own layers (routes.py).
        middleware=[cors.inner, Middleware(ProxyDispatch, table=proxied)],
        outer_middleware=[cors.outer],
    )
    proxied.install(app.router)
    add_websocket_routes(app.router, ROUTES, gateway)
    return app


def lifespan(gateway: Gateway) -> Lifespan:
    """Opens the upstreams (an aiohttp session each for the proxy, an httpx client each for health),
    the token verifier, the rate limiter and the stream slots, and closes them at shutdown."""
    settings = gateway.settings
    timeout = httpx.Timeout(
        connect=settings.upstream_connect_timeout,
        read=settings.upstream_read_timeout,
        write=settings.upstream_read_timeout,
        pool=settings.upstream_connect_timeout,
    )

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        urls = {"auth": settings.auth_url, "documents": settings.documents_url, "llm": settings.llm_url}
        # A pool per service: one busy service (or one user's uploads) cannot take another's connections.
        sessions = {
            name: new_session(
                settings.upstream_connect_timeout,
                settings.upstream_read_timeout,
                settings.upstream_max_connections,
                settings.upstream_pool_timeout,
            )
            for name in ROUTES
        }
        health_clients: list[ServiceClient] = []
        for name, prefixes in ROUTES.items():
            upstream = Upstream(
                name, prefixes, urls[name], sessions[name], CRITICAL[name], settings.proxies, tuple(urls.values())
            )
            gateway.upstreams[name] = upstream
            client = ServiceClient(name, urls[name], timeout=timeout, max_connections=4)
            health_clients.append(client)
            app.state.health.add(upstream_check(upstream, client, settings.health_timeout))
        gateway.verifier = TokenVerifier(settings, SERVICE)
        gateway.verifier.start()
        gateway.limiter = RateLimiter.for_settings(settings, SERVICE)
        gateway.slots = StreamSlots(app.state.kv, settings.max_streams_per_user)
        try:
            yield
        finally:
            await gateway.slots.close()
            await asyncio.gather(*(session.close() for session in sessions.values()))
            await asyncio.gather(*(c.aclose() for c in health_clients))
            await gateway.verifier.aclose()
            await gateway.limiter.close()

    return run


app = build()
