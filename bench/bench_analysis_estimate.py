"""An analysis' estimate before any call: ``POST /api/v1/documents/{id}/analyses/estimate`` latency,
and what the budget check adds to starting an analysis.

1. Sequential estimates through the gateway, each the whole round trip: documents checks the body,
   reads the document's text (or chunks), and asks the llm service's estimate for each
   orchestration the analysis would make (a short document: one per model, plus the synthesis; a
   long one: one per chunk and model, one reduce per model, the synthesis), 8 at a time.
2. Starting an analysis (202) with LLM_BUDGET_USD_PER_DAY set, so the start makes the estimate
   before queuing, against the same start with no budget (the first estimate says no budget
   applies and no more are asked). Each start asks a fresh analysis (``fresh``), which then runs
   against the fake provider in the background.

The models are litellm's gpt-4o-mini (its real tokenizer and prices) served by the fake provider,
which must count no call during part 1.

The stack (auth, documents, llm, gateway) runs as `make dev` runs it: SQLite, no Redis, real
processes; documents with its default chunking (1500 tokens) and context budget (6000 tokens).
Usage: python bench/bench_analysis_estimate.py [requests per case]   (default 40; about two minutes)
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
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_llm import pct, start_fake  # noqa: E402
from tests.support.users import new_access_token  # noqa: E402
from tools.stack import Stack, free_port  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 40
MODELS = ["mini-1", "mini-2", "mini-3"]
API = "/api/v1/documents"
SHORT = "Quarterly report. " + "Revenue grew by ten percent while costs stayed flat across the regions. " * 40
LONG = "\n\n".join(
    f"Chapter {i}. " + "The expedition crossed the valley, mapped the river and made camp by the ridge. " * 90
    for i in range(40)
)
BODY = {"kind": "summary", "models": MODELS, "synthesis_model": MODELS[0]}


def stack_for(workdir: Path, fake_url: str, budget: bool) -> Stack:
    models_file = workdir / "models.json"
    params = {"model": "openai/gpt-4o-mini", "api_base": f"{fake_url}/v1", "api_key": "k"}
    entries = [{"model_name": m, "litellm_params": params} for m in MODELS]
    models_file.write_text(json.dumps({"model_list": entries}))
    env = {
        "LLM_MODELS_FILE": str(models_file),
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_PER_MINUTE": "100000000",
        "RATE_LIMIT_PER_HOUR": "1000000000",
        "ANALYSIS_MAX_ACTIVE_PER_USER": "1000",
        "ENABLE_CACHE": "false",
    }
    if budget:
        env["LLM_BUDGET_USD_PER_DAY"] = "1000"
    return Stack(workdir, env)


async def upload(client: httpx.AsyncClient, text: str, name: str) -> dict[str, Any]:
    r = await client.post(API, files={"file": (name, text.encode(), "text/plain")})
    assert r.status_code == 201, r.text
    doc: dict[str, Any] = r.json()
    return doc


async def timed(client: httpx.AsyncClient, url: str, body: dict[str, Any], n: int, status: int) -> list[float]:
    for _ in range(3):  # warm-up: connections, tokenizer, the model list
        r = await client.post(url, json=body)
        assert r.status_code == status, r.text
    times = []
    for _ in range(n):
        started = time.perf_counter()
        r = await client.post(url, json=body)
        times.append((time.perf_counter() - started) * 1000)
        assert r.status_code == status, r.text
    return times


async def run(budget: bool, n: int) -> tuple[dict[str, list[float]], dict[str, Any], int]:
    workdir = Path(tempfile.mkdtemp(prefix="ultrai-bench-docest-"))
    fake_port = free_port()
    fake_proc = start_fake(fake_port)
    fake_url = f"http://127.0.0.1:{fake_port}"
    stack = stack_for(workdir, fake_url, budget)
    results: dict[str, list[float]] = {}
    try:
        await asyncio.to_thread(stack.start_all)
        token = await new_access_token(stack.url("gateway"), "bench")
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=stack.url("gateway"), headers=headers, timeout=120) as gw:
            short = await upload(gw, SHORT, "short.txt")
            long = await upload(gw, LONG, "long.txt")
            sample = (await gw.post(f"{API}/{long['id']}/analyses/estimate", json=BODY)).json()
            if budget:
                for name, doc in (("short", short), ("long", long)):
                    url = f"{API}/{doc['id']}/analyses/estimate"
                    results[f"estimate, {name} document ({doc['chunk_count']} chunks)"] = await timed(
                        gw, url, BODY, n, 200
                    )
                async with httpx.AsyncClient(base_url=fake_url, timeout=10) as fake:
                    calls = len((await fake.get("/_fake/requests")).json())
            else:
                calls = 0
            label = "with a budget: estimated first" if budget else "no budget: one estimate request"
            url = f"{API}/{short['id']}/analyses"
            results[f"start (202), short document, {label}"] = await timed(gw, url, {**BODY, "fresh": True}, n, 202)
    finally:
        stack.stop_all()
        fake_proc.terminate()
        fake_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return results, sample, calls


async def main() -> int:
    results, sample, calls = await run(True, N)
    unbudgeted, _, _ = await run(False, N)
    results.update(unbudgeted)
    print(f"analysis estimate benchmark ({N} sequential requests per case; 3 models + synthesis, gpt-4o-mini)")
    for name, times in results.items():
        print(f"  {name:<62} p50 {statistics.median(times):7.1f} ms   p99 {pct(times, 0.99):7.1f} ms")
    print(
        f"  the long document's plan: {sample['orchestrations_per_step']}, {sample['calls']} calls, input tokens "
        f"{sample['input_tokens']}, cost ${sample['cost_usd']['low']:.6f}-${sample['cost_usd']['high']:.6f}"
    )
    print(f"  provider calls made by the estimates: {calls} (must be 0)")
    print(f"  load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0 if calls == 0 else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
