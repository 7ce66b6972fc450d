"""The llm service's estimate before any call: ``POST /api/v1/llm/orchestrate/estimate`` latency.

1. Sequential requests straight to the llm service (and one case through the gateway), each the
   whole HTTP round trip: the token check, the plan (litellm's token counter per planned call), the
   budget read (LLM_BUDGET_USD_PER_DAY is set, so the day's spend is read from the database), the
   answer. Each request has a prompt of its own (nothing counted before); the "repeated" cases send
   the same request again, as the budget check before an orchestration repeats its estimate.
   For scale: ``GET /api/v1/llm/models`` at the service, the floor of an authenticated request.
2. In this process, without HTTP and the budget read: the plan and the estimate's counting alone.

The models are litellm's gpt-4o-mini (its real tokenizer and prices) served by the fake provider,
which must count no call at all. Goal: p50 under 5 ms.

The stack (auth, llm, gateway) runs as `make dev` runs it: SQLite, in-process cache, real processes.
Usage: python bench/bench_estimate.py [requests per case]   (default 300; about half a minute)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_llm import pct, start_fake  # noqa: E402
from tests.support.users import new_access_token  # noqa: E402
from tools.stack import Stack, free_port  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
MODELS = [f"mini-{i}" for i in range(1, 6)]
PROMPT = "Compare the notice periods of the two contracts and say which is stricter, and why."
CONTEXT = [f"Clause {i}: " + "the parties agree to the terms set out in the schedule. " * 12 for i in range(1, 31)]
CASES = {
    "parallel, 3 models": {"prompt": PROMPT, "models": MODELS[:3], "pattern": "parallel"},
    "synthesis, 3 models": {"prompt": PROMPT, "models": MODELS[:3], "pattern": "synthesis"},
    "peer_review + synthesis, 5 models": {
        "prompt": PROMPT,
        "models": MODELS,
        "pattern": "peer_review",
        "synthesis_model": MODELS[0],
    },
    "ranked, 5 models": {"prompt": PROMPT, "models": MODELS, "pattern": "ranked"},
    "synthesis, 3 models, 20 kB of context": {"prompt": PROMPT, "models": MODELS[:3], "context": CONTEXT},
}


async def measure(client: httpx.AsyncClient, body: dict, n: int, repeated: bool = False) -> list[float]:
    """Each request with a prompt of its own (nothing counted before), unless ``repeated`` (the
    same request again, as the budget check before an orchestration repeats its estimate: the
    token counts are remembered)."""
    for i in range(20):  # warm-up: connections, litellm's tokenizer
        r = await client.post("/api/v1/llm/orchestrate/estimate", json={**body, "prompt": f"{PROMPT} (w{i})"})
        assert r.status_code == 200, r.text
    times = []
    for i in range(n):
        request = body if repeated else {**body, "prompt": f"{PROMPT} ({i})"}
        started = time.perf_counter()
        r = await client.post("/api/v1/llm/orchestrate/estimate", json=request)
        times.append((time.perf_counter() - started) * 1000)
        assert r.status_code == 200, r.text
    return times


async def in_process(models_file: Path, n: int) -> dict[str, list[float]]:
    """The plan and the planned calls' counting (``ultrai_llm.estimate``), per case, in this process."""
    sys.path.insert(0, str(ROOT / "services" / "llm"))
    from tests.llm.conftest import settings
    from ultrai_llm.cache import ResponseCache
    from ultrai_llm.catalog import build_catalog
    from ultrai_llm.engine import Engine
    from ultrai_llm.estimate import _Calls
    from ultrai_llm.orchestrate import Orchestrator
    from ultrai_llm.schemas import OrchestrateRequest

    config = settings(llm_models_file=models_file)
    engine = Engine(config, build_catalog(config), ResponseCache(None, 1, enabled=False))  # type: ignore[arg-type]
    orchestrator = Orchestrator(engine, config, lambda *_: None)
    times: dict[str, list[float]] = {}
    for name, body in CASES.items():
        times[name] = []
        for i in range(n + 20):
            request = OrchestrateRequest.model_validate({**body, "prompt": f"{PROMPT} ({i})"})
            started = time.perf_counter()
            _Calls(engine, await orchestrator.plan(request, "bench")).build()
            if i >= 20:
                times[name].append((time.perf_counter() - started) * 1000)
    return times


async def floor(client: httpx.AsyncClient, n: int) -> list[float]:
    times = []
    for i in range(n + 20):
        started = time.perf_counter()
        r = await client.get("/api/v1/llm/models")
        if i >= 20:
            times.append((time.perf_counter() - started) * 1000)
        assert r.status_code == 200, r.text
    return times


async def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="ultrai-bench-estimate-"))
    fake_port = free_port()
    fake_proc = start_fake(fake_port)
    fake_url = f"http://127.0.0.1:{fake_port}"
    models_file = workdir / "models.json"
    entries = [
        {
            "model_name": m,
            "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": f"{fake_url}/v1", "api_key": "k"},
        }
        for m in MODELS
    ]
    models_file.write_text(json.dumps({"model_list": entries}))
    env = {
        "LLM_MODELS_FILE": str(models_file),
        "LLM_BUDGET_USD_PER_DAY": "5",
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_PER_MINUTE": "100000000",
        "RATE_LIMIT_PER_HOUR": "1000000000",
    }
    stack = Stack(workdir, env, names=("auth", "llm", "gateway"))
    results: dict[str, list[float]] = {}
    try:
        await asyncio.to_thread(stack.start_all)
        token = await new_access_token(stack.url("gateway"), "bench")
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=stack.url("llm"), headers=headers, timeout=30) as llm:
            sample = (await llm.post("/api/v1/llm/orchestrate/estimate", json=CASES["ranked, 5 models"])).json()
            for name, body in CASES.items():
                results[name] = await measure(llm, body, N)
            for name in ("ranked, 5 models", "synthesis, 3 models, 20 kB of context"):
                results[f"{name}, repeated"] = await measure(llm, CASES[name], N, repeated=True)
            results["(floor: GET /api/v1/llm/models)"] = await floor(llm, N)
        async with httpx.AsyncClient(base_url=stack.url("gateway"), headers=headers, timeout=30) as gw:
            results["synthesis, 3 models, through the gateway"] = await measure(gw, CASES["synthesis, 3 models"], N)
        async with httpx.AsyncClient(base_url=fake_url, timeout=10) as fake:
            provider_calls = len((await fake.get("/_fake/requests")).json())
        local = await in_process(models_file, N)
    finally:
        stack.stop_all()
        fake_proc.terminate()
        fake_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"estimate benchmark ({N} sequential requests per case; models: gpt-4o-mini's tokenizer and prices)")
    for name, times in results.items():
        print(f"  {name:<50} p50 {statistics.median(times):6.2f} ms   p99 {pct(times, 0.99):6.2f} ms")
    print("  (goal: p50 < 5 ms at the service)")
    print("in this process, plan + counting (no HTTP, no budget read):")
    for name, times in local.items():
        print(f"  {name:<50} p50 {statistics.median(times):6.2f} ms   p99 {pct(times, 0.99):6.2f} ms")
    print(
        f"  a ranked estimate of 5 models: {sample['calls_per_stage']}, input tokens {sample['input_tokens']}, "
        f"output {sample['output_tokens']}, cost ${sample['cost_usd']['low']:.6f}-${sample['cost_usd']['high']:.6f}"
    )
    print(f"  provider calls made: {provider_calls} (must be 0)")
    print(f"  load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0 if provider_calls == 0 else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
