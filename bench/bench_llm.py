"""The llm service: orchestration overhead, cache-hit latency, start-up time and memory.

1. Orchestration overhead: a ``parallel`` orchestration of 5 models that each answer in 200 ms (the
   fake OpenAI-compatible provider, in its own process), through the gateway, against the same five
   calls sent concurrently straight to the fake with plain httpx, alternating in the same run. Each
   orchestration comes on a fresh connection, as a browser's does (to the gateway, and to the llm
   service when sent there straight); the five direct calls reuse theirs, as the llm service's calls
   to a provider do. Overhead = p50(gateway) - p50(direct)   (our bar: under 15 ms). Beside it, the
   CPU time the llm service and the gateway spend per orchestration (from /proc: robust where wall
   times are not, on a loaded machine).
2. Cache-hit latency at the service: ``POST /v1/chat/completions`` straight to the llm service with a
   request it has cached, sequential (our bar: p50 under 3 ms); through the gateway for comparison.
3. Overhead per added refinement round: the same ``parallel`` orchestration of the five models
   straight to the llm service with ``rounds`` 1, 2 and 3 (each round waits for the five 200 ms
   calls), alternating with the five calls straight to the fake and through a litellm Router.
   Per added round = (p50(rounds=3) - p50(rounds=1)) / 2 - p50(direct): what a round costs beyond
   the models' time (our bar: under 5 ms); the same beyond litellm alone for comparison. Then in
   this process, without HTTP, auth or usage recording: the orchestrator with 1 and 3 rounds against
   1 and 3 sequential gathers of the same calls through the orchestrator's own Router, i.e. what the
   orchestration code itself adds per round.
4. Start-up of the llm service alone (process start to /live answering) and its resident memory,
   at rest and after the load above.

The stack (auth, llm, gateway) runs as `make dev` runs it: SQLite, in-process cache, real processes.
Usage: python bench/bench_llm.py [repetitions]   (default 40; about five minutes)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.users import new_access_token  # noqa: E402
from tools.bench_results import Results  # noqa: E402
from tools.stack import ServiceProcess, Stack, free_port  # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 40
MODELS = [f"bench-{i}" for i in range(1, 6)]
DELAY = 0.2


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_fake(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the fake provider did not start")


def litellm_router(fake_url: str):
    """A litellm Router in this process over the same five models: to measure what litellm adds."""
    sys.path.insert(0, str(ROOT / "services" / "llm"))
    from ultrai_llm.engine_setup import litellm

    return litellm.Router(
        model_list=[
            {"model_name": m, "litellm_params": {"model": f"openai/{m}", "api_base": f"{fake_url}/v1", "api_key": "k"}}
            for m in MODELS
        ],
        num_retries=2,
    )


async def overhead(
    gateway: httpx.AsyncClient, llm: httpx.AsyncClient, fake: httpx.AsyncClient, router, stack: Stack
) -> dict[str, list[float]]:
    """Per round, in turn: the orchestration through the gateway and straight to the llm service, the
    five calls straight to the fake, and the five calls through a litellm Router in this process (so
    the machine's load, which varies, hits all four alike). ``gateway`` and ``llm`` keep no
    connection alive: each orchestration opens its own. Also the CPU seconds the llm service and the
    gateway used over the measured rounds ("llm cpu", "gateway cpu": one figure each)."""
    times: dict[str, list[float]] = {"gateway": [], "service": [], "direct": [], "litellm": []}

    async def one_direct(model: str, prompt: str) -> None:
        r = await fake.post(
            "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": prompt}]}
        )
        r.raise_for_status()

    cpu: dict[str, float] = {}
    for i in range(ROUNDS + 3):
        if i == 3:  # the first rounds warm up connections and litellm's clients
            cpu = {name: stack.procs[name].cpu_seconds() for name in ("llm", "gateway")}
        prompt = f"Round {i}: what is the answer? {secrets.token_hex(4)}"
        started = time.perf_counter()
        r = await gateway.post(
            "/api/v1/llm/orchestrate",
            json={"prompt": prompt, "models": MODELS, "pattern": "parallel", "cache": False},
        )
        via = time.perf_counter() - started
        body = r.json()
        assert r.status_code == 200 and body["status"] == "completed", r.text
        started = time.perf_counter()
        r = await llm.post(
            "/api/v1/llm/orchestrate",
            json={"prompt": prompt + "?", "models": MODELS, "pattern": "parallel", "cache": False},
        )
        service = time.perf_counter() - started
        assert r.status_code == 200, r.text
        started = time.perf_counter()
        await asyncio.gather(*(one_direct(m, prompt) for m in MODELS))
        direct = time.perf_counter() - started
        messages = [{"role": "user", "content": prompt}]
        started = time.perf_counter()
        await asyncio.gather(*(router.acompletion(model=m, messages=messages) for m in MODELS))
        alone = time.perf_counter() - started
        if i >= 3:
            times["gateway"].append(via * 1000)
            times["service"].append(service * 1000)
            times["direct"].append(direct * 1000)
            times["litellm"].append(alone * 1000)
    for name, before in cpu.items():
        times[f"{name} cpu"] = [stack.procs[name].cpu_seconds() - before]
    return times


LAYERS = (1, 2, 3)


async def round_overhead(llm: httpx.AsyncClient, fake: httpx.AsyncClient, router) -> dict[str, list[float]]:
    """Per repetition, in turn: the orchestration with 1, 2 and 3 rounds straight to the llm service,
    the five calls straight to the fake, and through a litellm Router in this process."""
    times: dict[str, list[float]] = {**{f"rounds={n}": [] for n in LAYERS}, "direct": [], "litellm": []}
    for i in range(ROUNDS + 3):
        prompt = f"Layers {i}: what is the answer? {secrets.token_hex(4)}"
        measured: dict[str, float] = {}
        for n in LAYERS:
            started = time.perf_counter()
            r = await llm.post(
                "/api/v1/llm/orchestrate",
                json={"prompt": prompt, "models": MODELS, "pattern": "parallel", "cache": False, "rounds": n},
            )
            measured[f"rounds={n}"] = time.perf_counter() - started
            body = r.json()
            assert r.status_code == 200 and body["status"] == "completed", r.text
            assert len(body["results"]) == n * len(MODELS)
        started = time.perf_counter()
        await asyncio.gather(
            *(
                fake.post("/v1/chat/completions", json={"model": m, "messages": [{"role": "user", "content": prompt}]})
                for m in MODELS
            )
        )
        measured["direct"] = time.perf_counter() - started
        messages = [{"role": "user", "content": prompt}]
        started = time.perf_counter()
        await asyncio.gather(*(router.acompletion(model=m, messages=messages) for m in MODELS))
        measured["litellm"] = time.perf_counter() - started
        if i >= 3:
            for name, seconds in measured.items():
                times[name].append(seconds * 1000)
    return times


async def rounds_in_process(models_file: Path) -> dict[str, list[float]]:
    """The orchestrator in this process (the service's Engine and Router, no usage recording) with 1
    and 3 rounds, alternating with 1 and 3 sequential gathers of the five calls through its Router."""
    sys.path.insert(0, str(ROOT / "services" / "llm"))
    from shared.kv import KeyValue
    from ultrai_llm.cache import ResponseCache
    from ultrai_llm.catalog import build_catalog
    from ultrai_llm.engine import Engine
    from ultrai_llm.orchestrate import Orchestrator
    from ultrai_llm.schemas import OrchestrateRequest
    from ultrai_llm.settings import LlmSettings

    keys = ("openai", "anthropic", "gemini", "groq", "mistral", "cohere", "deepseek", "openrouter")
    config = LlmSettings(
        **{f"{k}_api_key": None for k in keys}, llm_models_file=str(models_file), llm_demo_models=False
    )
    engine = Engine(config, build_catalog(config), ResponseCache(KeyValue(None, service="bench"), 60))
    orchestrator = Orchestrator(engine, config, lambda user, endpoint, results: None)
    router = engine.router
    assert router is not None
    times: dict[str, list[float]] = {"orchestrator 1": [], "orchestrator 3": [], "router 1": [], "router 3": []}
    for i in range(ROUNDS + 3):
        prompt = f"In process {i}: what is the answer? {secrets.token_hex(4)}"
        measured: dict[str, float] = {}
        for n in (1, 3):
            request = OrchestrateRequest(prompt=prompt, models=MODELS, pattern="parallel", cache=False, rounds=n)
            started = time.perf_counter()
            answer = await orchestrator.execute(await orchestrator.plan(request, "bench"))
            measured[f"orchestrator {n}"] = time.perf_counter() - started
            assert answer["status"] == "completed"
            messages = [{"role": "user", "content": prompt}]
            started = time.perf_counter()
            for _ in range(n):
                await asyncio.gather(*(router.acompletion(model=m, messages=messages, timeout=60) for m in MODELS))
            measured[f"router {n}"] = time.perf_counter() - started
        if i >= 3:
            for name, seconds in measured.items():
                times[name].append(seconds * 1000)
    # The Router's aiohttp sessions stay open until the process ends (as in the service), and asyncio
    # would complain about each of them then: the figures are what this prints.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    return times


async def cache_hits(client: httpx.AsyncClient, n: int = 300) -> list[float]:
    body = {"model": "bench-1", "messages": [{"role": "user", "content": "cached question"}], "temperature": 0}
    r = await client.post("/v1/chat/completions", json=body)
    r.raise_for_status()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        r = await client.post("/v1/chat/completions", json=body)
        times.append((time.perf_counter() - started) * 1000)
        assert r.json()["ultrai"]["cached"] is True
    return times[20:]


async def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="ultrai-bench-llm-"))
    fake_port = free_port()
    fake_proc = start_fake(fake_port)
    fake_url = f"http://127.0.0.1:{fake_port}"
    models_file = workdir / "models.json"
    models_file.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": m,
                        "litellm_params": {"model": f"openai/{m}", "api_base": f"{fake_url}/v1", "api_key": "k"},
                    }
                    for m in MODELS
                ]
            }
        )
    )
    env = {
        "LLM_MODELS_FILE": str(models_file),
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_PER_MINUTE": "100000000",
        "RATE_LIMIT_PER_HOUR": "1000000000",
    }
    stack = Stack(workdir, env, names=("auth", "llm", "gateway"))
    try:
        async with httpx.AsyncClient(base_url=fake_url, timeout=30) as fake:
            for m in MODELS:
                (await fake.post("/_fake/behave", json={"model": m, "delay": DELAY})).raise_for_status()
            await asyncio.to_thread(stack.start_all)
            limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
            # A browser's orchestration: a connection of its own, closed after the answer.
            fresh = httpx.Limits(max_connections=50, max_keepalive_connections=0)
            token = await new_access_token(stack.url("gateway"), "bench")
            auth = {"Authorization": f"Bearer {token}"}
            async with (
                httpx.AsyncClient(base_url=stack.url("gateway"), timeout=30, limits=limits, headers=auth) as gw,
                httpx.AsyncClient(base_url=stack.url("gateway"), timeout=30, limits=fresh, headers=auth) as gw_fresh,
            ):
                rss_rest = stack.procs["llm"].rss_mb()
                async with (
                    httpx.AsyncClient(base_url=stack.url("llm"), timeout=30, headers=auth, limits=limits) as llm,
                    httpx.AsyncClient(base_url=stack.url("llm"), timeout=30, headers=auth, limits=fresh) as llm_fresh,
                ):
                    router = litellm_router(fake_url)
                    times = await overhead(gw_fresh, llm_fresh, fake, router, stack)
                    layers = await round_overhead(llm, fake, router)
                    hits_service = await cache_hits(llm)
                hits_gateway = await cache_hits(gw, 150)
                rss_loaded = stack.procs["llm"].rss_mb()
            in_process = await rounds_in_process(models_file)
        stack.stop("llm")
        # Start-up alone (nothing else starting at the same time), three times.
        starts = []
        for i in range(3):
            proc = ServiceProcess(
                stack.process("llm").spec,
                free_port(),
                env={**stack.env, "DATA_DIR": str(workdir / f"start-{i}")},
                log_path=workdir / f"llm-start-{i}.log",
            ).start()
            starts.append(proc.wait_ready("/live", timeout=60))
            rss_start = proc.rss_mb()
            proc.stop()
    finally:
        stack.stop_all()
        fake_proc.terminate()
        fake_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)

    via, direct, alone = times["gateway"], times["direct"], times["litellm"]
    p50_via, p50_direct = statistics.median(via), statistics.median(direct)
    print(f"llm benchmark ({ROUNDS} rounds; 5 models answering in {DELAY * 1000:.0f} ms each)")
    print(f"  parallel orchestration through the gateway  p50 {p50_via:7.1f} ms   p90 {pct(via, 0.9):7.1f} ms")
    service = times["service"]
    print(
        f"  the same, straight to the llm service        p50 {statistics.median(service):7.1f} ms   "
        f"p90 {pct(service, 0.9):7.1f} ms"
    )
    print(f"  the same 5 calls straight to the fake        p50 {p50_direct:7.1f} ms   p90 {pct(direct, 0.9):7.1f} ms")
    print(f"  orchestration overhead (p50 difference)          {p50_via - p50_direct:7.1f} ms   (bar: < 15 ms)")
    p50_alone = statistics.median(alone)
    print(f"  the 5 calls through a litellm Router alone   p50 {p50_alone:7.1f} ms   p90 {pct(alone, 0.9):7.1f} ms")
    print(f"  litellm alone adds (p50 difference)              {p50_alone - p50_direct:7.1f} ms")
    print(f"  our service + gateway beyond litellm             {p50_via - p50_alone:7.1f} ms")
    print(f"  of which the gateway hop                         {p50_via - statistics.median(service):7.1f} ms")
    # Each measured round made two orchestrations through the llm service, one through the gateway.
    llm_cpu = times["llm cpu"][0] * 1000 / (2 * len(via))
    gateway_cpu = times["gateway cpu"][0] * 1000 / len(via)
    print(f"  CPU per orchestration: llm service {llm_cpu:.1f} ms (5 calls), gateway {gateway_cpu:.2f} ms")
    results = Results("llm")
    results.add("orchestration through the gateway p50", p50_via, "ms", better="lower")
    results.add("orchestration overhead p50", p50_via - p50_direct, "ms", better="lower")
    results.add("litellm Router alone overhead p50", p50_alone - p50_direct, "ms", better="lower")
    results.add("llm service CPU per orchestration", llm_cpu, "ms", better="lower")
    results.add("gateway CPU per orchestration", gateway_cpu, "ms", better="lower")
    p50 = {name: statistics.median(values) for name, values in layers.items()}
    for n in LAYERS:
        print(f"  parallel, rounds={n}, straight to the service  p50 {p50[f'rounds={n}']:7.1f} ms")
    per_round = (p50[f"rounds={LAYERS[-1]}"] - p50["rounds=1"]) / (LAYERS[-1] - 1)
    print(f"  each added round                                 {per_round:7.1f} ms")
    print(f"  of which the 5 calls straight to the fake    p50 {p50['direct']:7.1f} ms")
    results.add("service overhead per added round", per_round - p50["direct"], "ms", better="lower")
    print(
        f"  service overhead per added round                 {per_round - p50['direct']:7.1f} ms   (bar: < 5 ms; "
        f"beyond litellm alone, p50 {p50['litellm']:.1f} ms: {per_round - p50['litellm']:.1f} ms)"
    )
    p50 = {name: statistics.median(values) for name, values in in_process.items()}
    own = (p50["orchestrator 3"] - p50["orchestrator 1"]) / 2
    alone = (p50["router 3"] - p50["router 1"]) / 2
    print(f"  in process: each added round, orchestrator       {own:7.1f} ms")
    print(f"  in process: each added gather, its Router alone  {alone:7.1f} ms")
    print(f"  in process: the orchestration code per round     {own - alone:7.1f} ms   (bar: < 5 ms)")
    print(
        f"  cache hit at the service                     p50 {statistics.median(hits_service):7.2f} ms   "
        f"p90 {pct(hits_service, 0.9):7.2f} ms   (bar: p50 < 3 ms)"
    )
    print(
        f"  cache hit through the gateway                p50 {statistics.median(hits_gateway):7.2f} ms   "
        f"p90 {pct(hits_gateway, 0.9):7.2f} ms"
    )
    print(
        f"  start-up to /live (llm alone)            median {statistics.median(starts):7.2f} s    "
        f"(runs: {', '.join(f'{s:.2f}' for s in starts)})"
    )
    print(
        f"  resident memory: just started {rss_start:.0f} MB; at rest in the stack {rss_rest:.0f} MB; "
        f"after the load {rss_loaded:.0f} MB"
    )
    # The figures scale with the machine's load: say what it was.
    print(f"  load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    results.add("cache hit at the service p50", statistics.median(hits_service), "ms", better="lower")
    results.add("start-up to /live", statistics.median(starts), "s", better="lower")
    results.add("resident memory after the load", rss_loaded, "MB", better="lower")
    results.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
