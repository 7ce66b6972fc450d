"""Traces: with OTEL_EXPORTER_OTLP_ENDPOINT set, one trace runs from the gateway through the services
to the provider call, its spans reach an OTLP/HTTP collector (a tiny one on loopback), and the
services' log lines carry the trace id beside the request id; unset, no OpenTelemetry SDK or
instrumentation is even imported."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import running_stack, stack_env
from tests.fakes.openai_server import FakeOpenAI
from tests.llm.conftest import LLM_ENV, keys_fetched
from tests.support.users import new_access_token
from tools.stack import ROOT

SERVER, CLIENT = 2, 3  # OTLP span kinds


def test_without_an_endpoint_no_tracing_is_imported_or_set_up() -> None:
    """Neither the tracing SDK, the exporter, the instrumentations nor shared.otel are imported, and
    no tracer provider is installed. (redis-py imports the SDK's metrics part by itself when the SDK
    is installed, which is one more reason the services do not install it by default.)"""
    code = (
        "import sys\n"
        "import ultrai_gateway.main, ultrai_auth.main\n"
        "from opentelemetry import trace\n"
        "ours = ('opentelemetry.sdk.trace', 'opentelemetry.instrumentation', 'opentelemetry.exporter', 'shared.otel')\n"
        "print(sorted(m for m in sys.modules if m.startswith(ours)))\n"
        "print(type(trace.get_tracer_provider()).__name__)\n"
    )
    env = {
        "PYTHONPATH": f"{ROOT}:{ROOT / 'services/gateway'}:{ROOT / 'services/auth'}",
        "ENVIRONMENT": "test",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    loaded, provider = out.stdout.strip().splitlines()[-2:]
    assert loaded == "[]", loaded
    assert provider == "ProxyTracerProvider", provider


async def test_one_trace_from_the_gateway_to_the_provider(
    pg_databases, redis_url: str | None, fake_provider: FakeOpenAI, tmp_path: Path
) -> None:
    pytest.importorskip("opentelemetry.sdk", reason="the optional packages of shared/requirements-otel.txt")
    from tests.fakes.otlp_collector import OtlpCollector

    with OtlpCollector() as collector:
        env = {
            **await stack_env(pg_databases, redis_url, "otel"),
            **LLM_ENV,
            "ENABLE_CACHE": "false",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }

        def models(workdir: Path) -> dict[str, str]:
            path = workdir / "models.json"
            path.write_text(json.dumps({"model_list": [fake_provider.model_entry("traced")]}))
            return {"LLM_MODELS_FILE": str(path)}

        async with running_stack(env, names=("auth", "llm", "gateway"), files=models) as stack:
            token = await new_access_token(stack.url("gateway"), "otel")
            await keys_fetched(stack.url("llm"), token)
            async with httpx.AsyncClient(
                base_url=stack.url("gateway"), headers={"Authorization": f"Bearer {token}"}, timeout=30
            ) as client:
                body = {"model": "traced", "messages": [{"role": "user", "content": "Where do traces go?"}]}
                answer = await client.post("/v1/chat/completions", json=body)
            assert answer.status_code == 200, answer.text
            request_id = answer.headers["x-request-id"]

            # The provider's request carries the trace context (W3C traceparent).
            sent = [r for r in fake_provider.requests if r.model == "traced"]
            assert len(sent) == 1
            trace_id = sent[0].headers["traceparent"].split("-")[1]

            def in_trace() -> list:
                return [s for s in collector.received() if s.trace_id == trace_id]

            for _ in range(200):  # the exporters send every 100 ms
                services = {s.service for s in in_trace() if s.kind == SERVER}
                if {"ultrai-gateway", "ultrai-llm"} <= services and any(
                    s.service == "ultrai-llm" and s.kind == CLIENT for s in in_trace()
                ):
                    break
                await asyncio.sleep(0.05)
            spans = in_trace()
            by_id = {s.span_id: s for s in spans}
            gateway_server = [s for s in spans if s.service == "ultrai-gateway" and s.kind == SERVER]
            llm_server = [s for s in spans if s.service == "ultrai-llm" and s.kind == SERVER]
            assert gateway_server and llm_server, [(s.service, s.name, s.kind) for s in spans]
            # llm's server span is a child of the gateway's call to it.
            parent = by_id.get(llm_server[0].parent_span_id)
            assert parent is not None and parent.service == "ultrai-gateway" and parent.kind == CLIENT
            # The provider call is a client span of llm's in the same trace.
            assert any(s.service == "ultrai-llm" and s.kind == CLIENT for s in spans), [
                (s.service, s.name) for s in spans
            ]

            # Auth's work for the sign-up is traced too, its statements included.
            auth_traces = {s.trace_id for s in collector.received() if s.service == "ultrai-auth" and s.kind == SERVER}
            statements = [
                s
                for s in collector.received()
                if s.service == "ultrai-auth"
                and s.trace_id in auth_traces
                and any(k.startswith("db.") for k in s.attributes)
            ]
            assert statements, "no database span from auth"

            # Every log line of the request names both ids.
            lines = [line for line in (stack.workdir / "llm.log").read_text().splitlines() if request_id in line]
            assert lines and all(trace_id in line for line in lines), lines
