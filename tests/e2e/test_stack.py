"""The four services as real processes on loopback, talked to through the gateway."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import httpx
import pytest

from tests.support.logs import reached, wait_for_log
from tests.support.users import bearer, login, register
from tools.stack import ROOT, SERVICES, service_command, service_env

pytestmark = pytest.mark.e2e


async def test_every_service_answers_its_health_endpoints(stack) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for name in ("gateway", "auth", "documents", "llm"):
            base = stack.url(name)
            live = await client.get(base + "/live")
            ready = await client.get(base + "/ready")
            health = await client.get(base + "/health")
            index = await client.get(base + "/")
            assert live.status_code == 200, name
            assert ready.status_code == 200, (name, ready.text)
            assert health.status_code == 200, (name, health.text)
            assert health.json()["status"] in ("pass", "warn"), name
            assert index.json()["service"] == name
            assert (await client.get(base + "/openapi.json")).status_code == 200
            assert "http_requests_total" in (await client.get(base + "/metrics")).text


async def test_gateway_health_aggregates_every_service(stack) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.get(stack.url("gateway") + "/health")
    body = resp.json()
    assert resp.status_code == 200, body
    for name in ("auth", "documents", "llm"):
        entry = body["checks"][f"{name}:responseTime"][0]
        assert entry["componentType"] == "service"
        assert entry["status"] in ("pass", "warn")
        assert entry["observedUnit"] == "ms"
    # no internal address leaks into the public health output
    assert "127.0.0.1" not in resp.text


async def test_request_id_is_kept_across_two_hops(stack) -> None:
    """client -> gateway -> each service: the id the client sent is the one every service logs."""
    rid = f"e2e-{uuid.uuid4().hex}"
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.get(stack.url("gateway") + "/health", headers={"X-Request-ID": rid})
    assert resp.headers["x-request-id"] == rid
    for name in ("auth", "documents", "llm"):
        log = await wait_for_log(stack.workdir / f"{name}.log", rid)
        assert rid in log, f"{name} did not log the request id"


@pytest.mark.parametrize(
    ("path", "service"),
    [
        ("/api/v1/auth/no-such-route", "auth"),
        ("/api/v1/documents/no-such-route", "documents"),
        ("/.well-known/no-such-file", "auth"),
        ("/api/v1/llm/no-such-route", "llm"),
        ("/v1/no-such-route", "llm"),
    ],
)
async def test_each_prefix_reaches_its_service(stack, path: str, service: str) -> None:
    rid = f"route-{uuid.uuid4().hex}"
    async with httpx.AsyncClient(timeout=10, base_url=stack.url("gateway")) as client:
        # a signed-in user, so the edge token check lets every prefix through
        tokens = await login(client, await register(client))
        await client.get(path, headers={"X-Request-ID": rid, **bearer(tokens["access_token"])})
    await wait_for_log(stack.workdir / f"{service}.log", rid)
    others = tuple(name for name in ("auth", "documents", "llm") if name != service)
    assert await reached(stack, rid, others) == []  # read once each has logged a later request
    for name in ("auth", "documents", "llm"):
        log = (stack.workdir / f"{name}.log").read_text()
        assert (rid in log) == (name == service), f"{path}: {name}"


async def test_gateway_health_with_one_service_stopped(make_stack) -> None:
    st = await make_stack()
    st.stop("documents")
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.get(st.url("gateway") + "/health")
        live = await client.get(st.url("gateway") + "/live")
        ready = await client.get(st.url("gateway") + "/ready")
        routed = await client.get(st.url("gateway") + "/api/v1/documents")
    body = resp.json()
    assert resp.status_code == 503
    assert body["status"] == "fail"
    assert body["checks"]["documents:responseTime"][0]["status"] == "fail"
    assert body["checks"]["documents:responseTime"][0]["affectedEndpoints"] == ["/api/v1/documents/*"]
    for name in ("auth", "llm"):
        assert body["checks"][f"{name}:responseTime"][0]["status"] in ("pass", "warn")
    # the gateway itself stays up and in rotation; only the dead prefix answers 503
    assert live.status_code == 200
    assert ready.status_code == 200
    assert routed.status_code == 503 and routed.json()["service"] == "documents"

    # the service back: the gateway routes to it again with no restart of its own
    await asyncio.to_thread(st.start, "documents")
    async with httpx.AsyncClient(timeout=10) as client:
        again = await client.get(st.url("gateway") + "/health")
    assert again.status_code == 200, again.text


async def test_llm_down_is_a_warning_not_a_failure(make_stack) -> None:
    st = await make_stack()
    st.stop("llm")
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.get(st.url("gateway") + "/health")
    body = resp.json()
    assert resp.status_code == 200
    assert body["status"] == "warn"
    assert body["checks"]["llm:responseTime"][0]["status"] == "warn"
    assert body["checks"]["llm:responseTime"][0]["affectedEndpoints"] == ["/api/v1/llm/*", "/v1/*"]


@pytest.mark.parametrize(
    ("service", "variable", "value"),
    [
        ("auth", "DB_POOL_SIZE", "lots"),
        ("gateway", "CORS_ORIGIN_REGEX", "(unclosed"),
        ("documents", "ENVIRONMENT", "moon"),
        ("llm", "REDIS_TIMEOUT", "-1"),
    ],
)
def test_invalid_setting_stops_the_service_naming_it(tmp_dir, service: str, variable: str, value: str) -> None:
    spec = SERVICES[service]
    env = service_env(spec, {variable: value, "DATA_DIR": str(tmp_dir)})
    proc = subprocess.run(
        service_command(spec, 0, python=sys.executable), env=env, cwd=ROOT, capture_output=True, timeout=60, text=True
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "invalid setting" in line]
    assert lines, proc.stderr[-2000:]
    assert variable in lines[0]
    assert "Traceback" not in proc.stderr
