"""Traces across the services, exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set.

Unset, nothing of the OpenTelemetry SDK or its instrumentations is imported (a service's memory stays
what it was); this module only reads the environment. Set, ``shared.otel`` (the optional packages of
``shared/requirements-otel.txt``) installs a tracer provider named after the service
(``ultrai-<service>``), FastAPI's own server spans use it, the HTTP clients (httpx: calls between
services and most providers; aiohttp: the gateway's proxy and litellm's transport), Redis and each
database engine are instrumented, and W3C trace context goes out on every call, so one trace runs
from the gateway through the services to each provider call. Every log line then carries the
trace id beside the request id. The SDK's own variables apply (OTEL_BSP_SCHEDULE_DELAY,
OTEL_TRACES_SAMPLER, OTEL_EXPORTER_OTLP_HEADERS...).
"""

from __future__ import annotations

import os
from typing import Any

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_started = False


def enabled() -> bool:
    """Whether traces are exported: an OTLP endpoint is set and the SDK is not disabled."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(os.environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def start(service: str) -> None:
    """The tracer provider and the client instrumentations, once per process, when enabled."""
    global _started
    if _started or not enabled():
        return
    from shared import otel

    otel.start(service)
    _started = True


def instrument_engine(engine: Any) -> None:
    """Spans for a database engine's statements (an ``AsyncEngine``), when traces are on."""
    if _started:
        from shared import otel

        otel.instrument_engine(engine)


def current_trace_id() -> str:
    """The trace id of the current span (32 hex digits), or "-" outside a trace or when off."""
    if not _started:
        return "-"
    from shared import otel

    return otel.current_trace_id()
