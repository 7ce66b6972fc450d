"""The gateway's health: each upstream's own ``/health``, summarised as one check per service."""

from __future__ import annotations

from typing import Any

import httpx

from shared.client import ServiceClient
from shared.health import Check, CheckResult, Status
from ultrai_gateway.proxy import Upstream


def upstream_check(upstream: Upstream, client: ServiceClient, timeout: float) -> Check:
    """Fails when the service cannot be reached in time; otherwise reports the service's own status
    and its checks. Never part of readiness: the gateway stays in rotation while a service is down."""
    affected = {"affectedEndpoints": [p + "/*" for p in upstream.prefixes]}

    async def probe() -> CheckResult:
        try:
            resp = await client.get("/health", timeout=timeout)
            body = resp.json()
        except httpx.TimeoutException:
            return CheckResult("fail", f"{upstream.name} did not answer in time", dict(affected))
        except (httpx.HTTPError, ValueError):
            return CheckResult("fail", f"{upstream.name} is unreachable", dict(affected))
        status = reported_status(body)
        extra: dict[str, Any] = {}
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


def reported_status(body: Any) -> Status:
    """The status a ``/health`` body reports; anything else is a failure."""
    reported = body.get("status") if isinstance(body, dict) else None
    if reported == "pass":
        return "pass"
    if reported == "warn":
        return "warn"
    return "fail"
