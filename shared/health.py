"""Health endpoints in the shape of the IETF "Health Check Response Format for HTTP APIs" draft.

- ``/live``: the process answers; no I/O at all (a liveness probe that touches a dependency turns one
  outage into restarts everywhere).
- ``/ready``: can this instance serve? Runs only the checks marked critical; 503 when one fails.
- ``/health``: every check, each with its observed latency. pass and warn answer 200, fail 503.

Outputs name the component and a short reason, never a host, a URL, a version or a trace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse

Status = Literal["pass", "warn", "fail"]
HEALTH_JSON = "application/health+json"
_RANK = {"pass": 0, "warn": 1, "fail": 2}


def worst(*statuses: Status) -> Status:
    return max(statuses, key=_RANK.__getitem__, default="pass")


@dataclass
class CheckResult:
    status: Status = "pass"
    output: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Probe = Callable[[], Awaitable[CheckResult | None]]


@dataclass
class Check:
    """One dependency. A probe returns a CheckResult (or None for pass) or raises (a failure).

    ``critical``: a failure is ``fail`` (else it is reported as ``warn``).
    ``readiness``: the check is part of ``/ready`` (by default, when critical). The gateway's
    upstream checks are critical for ``/health`` but not part of its readiness: one service's
    outage must not get the gateway itself taken out of rotation.
    """

    name: str
    probe: Probe
    component_type: str = "component"
    critical: bool = True
    timeout: float = 1.0
    measurement: str = "responseTime"
    readiness: bool | None = None

    @property
    def in_readiness(self) -> bool:
        return self.critical if self.readiness is None else self.readiness


class HealthRegistry:
    def __init__(self, service: str, version: str = "1", description: str | None = None) -> None:
        self.service = service
        self.version = version
        self.description = description or f"UltrAI {service} service"
        self.checks: list[Check] = []

    def add(self, check: Check) -> None:
        self.checks.append(check)

    async def _run(self, check: Check) -> tuple[Check, dict[str, Any]]:
        started = time.perf_counter()
        # Not asyncio.wait_for: it waits for the cancelled probe to finish cleaning up (closing a
        # connection over a slow link can take as long again), and the answer must be bounded.
        task = asyncio.ensure_future(check.probe())
        done, _ = await asyncio.wait({task}, timeout=check.timeout)
        if not done:
            task.cancel()
            task.add_done_callback(_consume)
            result = CheckResult("fail", f"no answer within {check.timeout:g} s")
        elif (error := task.exception()) is not None:  # a probe failure is a check result, not an error
            result = CheckResult("fail", _short_reason(error))
        else:
            result = task.result() or CheckResult()
        if result.status == "fail" and not check.critical:
            result.status = "warn"
        entry: dict[str, Any] = {
            "componentType": check.component_type,
            "observedValue": round((time.perf_counter() - started) * 1000, 2),
            "observedUnit": "ms",
            "status": result.status,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if result.output:
            entry["output"] = result.output
        entry.update(result.extra)
        return check, entry

    async def report(self, critical_only: bool = False) -> dict[str, Any]:
        checks = [c for c in self.checks if c.in_readiness or not critical_only]
        results = await asyncio.gather(*(self._run(c) for c in checks))
        status: Status = worst(*(entry["status"] for _, entry in results))
        return {
            "status": status,
            "version": self.version,
            "serviceId": self.service,
            "description": self.description,
            "checks": {f"{c.name}:{c.measurement}": [entry] for c, entry in results},
        }

    def router(self) -> APIRouter:
        router = APIRouter(tags=["health"])
        health_responses: dict[int | str, dict[str, Any]] = {
            200: {"description": "pass or warn", "content": {HEALTH_JSON: {}}},
            503: {
                "description": "fail: a dependency this service cannot work without is down",
                "content": {HEALTH_JSON: {}},
            },
        }

        @router.get(
            "/live", summary="Liveness: the process answers (no I/O)", responses={200: {"content": {HEALTH_JSON: {}}}}
        )
        async def live() -> JSONResponse:
            return JSONResponse(
                {"status": "pass", "version": self.version, "serviceId": self.service}, media_type=HEALTH_JSON
            )

        @router.get("/ready", summary="Readiness: critical dependencies only", responses=health_responses)
        async def ready() -> JSONResponse:
            body = await self.report(critical_only=True)
            return _answer(body)

        @router.get("/health", summary="Health of every dependency, with latency", responses=health_responses)
        async def health() -> JSONResponse:
            body = await self.report()
            return _answer(body)

        return router


def _answer(body: dict[str, Any]) -> JSONResponse:
    code = 503 if body["status"] == "fail" else 200
    headers = {"Cache-Control": "no-store"}
    if code == 503:
        headers["Retry-After"] = "5"
    return JSONResponse(body, status_code=code, media_type=HEALTH_JSON, headers=headers)


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _short_reason(exc: BaseException) -> str:
    """A reason that names the kind of failure, not the address or the driver's message."""
    name = type(exc).__name__
    lowered = f"{name} {exc}".lower()
    if "refused" in lowered or "connect" in lowered:
        return "connection failed"
    if "timeout" in lowered or "timed out" in lowered:
        return "timed out"
    if "auth" in lowered or "password" in lowered:
        return "authentication failed"
    return f"unavailable ({name})"
