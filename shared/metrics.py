"""Prometheus metrics: request counts and latency by route template, cache and upstream counters."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests by route template",
    ["service", "method", "route", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route template",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
CACHE = Counter("cache_requests_total", "Cache lookups by result", ["service", "cache", "result"], registry=REGISTRY)
UPSTREAM_ERRORS = Counter(
    "upstream_errors_total",
    "Failed calls to another service or provider",
    ["service", "upstream", "kind"],
    registry=REGISTRY,
)
KV_FALLBACK = Counter(
    "kv_fallback_total",
    "Key-value operations served in process because Redis was unavailable",
    ["service"],
    registry=REGISTRY,
)
KV_BUSY = Counter(
    "kv_busy_total",
    "Key-value operations that found every pooled Redis connection in use for the whole bounded wait",
    ["service"],
    registry=REGISTRY,
)

REVOCATION_UNKNOWN = Counter(
    "token_revocation_unknown_total",
    "Token checks refused (503) because neither the shared store nor auth could say whether it was revoked",
    ["service"],
    registry=REGISTRY,
)


def metrics_router() -> APIRouter:
    router = APIRouter(tags=["metrics"])

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router
