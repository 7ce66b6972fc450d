"""CPU per model call through litellm, by the route litellm takes to an OpenAI-compatible server.

The llm service's Engine (its ServiceRouter, built from a models file as the service builds it; no
cache) calls the fake OpenAI-compatible provider (its own process, answering at once) through each
route litellm offers for such a server:

- ``openai/<model>`` with ``api_base``: the ``openai`` SDK over litellm's aiohttp transport (today's);
- ``aiohttp_openai/<model>``: litellm's own aiohttp handler, no SDK (in this litellm version it
  reports no usage on a whole answer and fails on a stream: measured whole only, for comparison);
- ``hosted_vllm/<model>``: litellm's own httpx handler (its base HTTP handler), no SDK;
- ``openai/<model>`` with ``EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER=true`` (shown as
  ``openai+base_http``): the same provider through that base HTTP handler instead of the SDK (the
  variable is read on each call, so it is set only while that route is measured).

For each route, in the same run and alternating between routes: the CPU time of this process
(``time.process_time``) over N sequential calls and over N calls made five at a time (gathers of
five, as an orchestration of five models makes them), per call, answered whole and streamed
(``stream=True`` with usage, as the service streams). Figures are medians over the repetitions;
ratios are against ``openai/``. The fake's CPU is not counted (it is another process).

What it showed (litellm 1.106.2, 2 CPUs under load): the httpx routes (``hosted_vllm/``,
``openai+base_http``) cost about 0.75-0.85 of ``openai/``'s CPU per call and behave alike for
usage, finish_reason, streamed deltas and error classes; ``aiohttp_openai/`` about 0.6, but without
usage or streaming. Not enough, or not safe, to leave ``openai/``: the service keeps it.

With a third argument, ``chunks`` (e.g. 300), it measures long streamed answers instead: through
``openai/`` only, the fake answering ``chunks`` words (a chunk each) and, for the difference, 10
words; sequential calls, alternating between the SDK's own construction of each chunk and
ultrai_llm/sdk_chunks.py's (pydantic's validator), in the same process. It prints the CPU per call
and the CPU per chunk (the difference between the long and short answers over the difference in
chunks), and beside it our own per-delta work in a streamed request (an ``EventRun`` queue and an SSE
frame per delta, ultrai_llm/streaming.py), measured alone.

What it showed (litellm 1.106.2, openai 2.54.0, 2 CPUs, load 3-5; four runs of ``3-9 5-10 300``): a chunk
cost 0.35-0.41 ms of CPU with the SDK's construction (``construct_type``, ~45 us a chunk when timed
alone, more in the service's busy process), 0.22-0.32 ms with pydantic's: 0.56-0.77 of it; the rest
is litellm's CustomStreamWrapper (``chunk_creator``: a new ModelResponseStream and StreamingChoices
per chunk) and, after the stream, its ``stream_chunk_builder`` over every chunk (in a worker
thread). Our own per-delta work is a few microseconds.

Usage: python bench/bench_litellm_call.py [repetitions] [calls] [chunks]
       (default 9 and 50, no long streams; about a minute)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services" / "llm"))

from bench.bench_llm import start_fake  # noqa: E402
from tools.bench_results import Results  # noqa: E402

REPS = int(sys.argv[1]) if len(sys.argv) > 1 else 9
CALLS = int(sys.argv[2]) if len(sys.argv) > 2 else 50
CHUNKS = int(sys.argv[3]) if len(sys.argv) > 3 else 0  # long streamed answers of this many chunks
SHORT = 10  # chunks of the short answer the long one is compared with
ROUTES = ("openai", "aiohttp_openai", "hosted_vllm", "openai+base_http")
BASE_HTTP = "EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER"
MODEL = "bench-1"
BATCH = 5  # calls made at once in the concurrent figures


def engine_for(route: str, base_url: str, folder: Path, models: tuple[str, ...] = (MODEL,)) -> Any:
    from shared.kv import KeyValue
    from ultrai_llm.cache import ResponseCache
    from ultrai_llm.catalog import build_catalog
    from ultrai_llm.engine import Engine
    from ultrai_llm.settings import LlmSettings

    path = folder / f"{route.replace('+', '_')}.json"
    entries = [
        {
            "model_name": model,
            "litellm_params": {"model": f"{route.split('+')[0]}/{model}", "api_base": base_url, "api_key": "sk-bench"},
            "model_info": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6},
        }
        for model in models
    ]
    path.write_text(json.dumps({"model_list": entries}))
    keys = ("openai", "anthropic", "gemini", "groq", "mistral", "cohere", "deepseek", "openrouter")
    config = LlmSettings(**{f"{k}_api_key": None for k in keys}, llm_models_file=str(path), llm_demo_models=False)
    return Engine(config, build_catalog(config), ResponseCache(KeyValue(None, service="bench"), 60, enabled=False))


# Routes that do not report usage, and that cannot stream (measured whole only).
NO_USAGE = {"aiohttp_openai"}
NO_STREAM = {"aiohttp_openai"}


async def one(route: str, engine: Any, i: int, stream: bool, model: str = MODEL) -> Any:
    from ultrai_llm.schemas import ModelParams

    async def on_delta(piece: str) -> None:
        return None

    result = await engine.call(
        model,
        [{"role": "user", "content": f"Question {i}: what is the answer to this one?"}],
        ModelParams(),
        stage="bench",
        scope="bench",
        use_cache=False,
        on_delta=on_delta if stream else None,
    )
    usage = result.completion_tokens or route in NO_USAGE
    if not result.ok or not result.text or not usage or result.finish_reason is None:
        raise RuntimeError(f"call failed: {result}")
    return result


async def cpu_per_call(route: str, engine: Any, concurrent: bool, stream: bool) -> float:
    """Milliseconds of this process's CPU per call, over CALLS calls."""
    if route.endswith("+base_http"):
        os.environ[BASE_HTTP] = "true"
    try:
        started = time.process_time()
        if concurrent:
            for first in range(0, CALLS, BATCH):
                await asyncio.gather(*(one(route, engine, i, stream) for i in range(first, first + BATCH)))
        else:
            for i in range(CALLS):
                await one(route, engine, i, stream)
        return (time.process_time() - started) * 1000 / CALLS
    finally:
        os.environ.pop(BASE_HTTP, None)


def words(count: int) -> str:
    return " ".join(f"w{i}" for i in range(count))


async def long_streams() -> None:
    """CPU per streamed call and per chunk, the SDK's chunk construction against sdk_chunks'."""
    from tools.stack import free_port
    from ultrai_llm import sdk_chunks

    port = free_port()
    fake = start_fake(port)
    ways = {"SDK construct_type": sdk_chunks.uninstall, "pydantic validate": sdk_chunks.install}
    answers = {"bench-long": CHUNKS, "bench-short": SHORT}
    figures: dict[tuple[str, str], list[float]] = {}
    try:
        for model, count in answers.items():
            httpx.post(f"http://127.0.0.1:{port}/_fake/behave", json={"model": model, "text": words(count)})
        with tempfile.TemporaryDirectory() as tmp:
            engine = engine_for("openai", f"http://127.0.0.1:{port}/v1", Path(tmp), tuple(answers))
            for rep in range(REPS + 1):  # the first round warms up, and is not counted
                for way, install in ways.items():
                    install()
                    for model, count in answers.items():
                        started = time.process_time()
                        for i in range(CALLS):
                            result = await one("openai", engine, i, True, model)
                            if result.text != words(count) or result.completion_tokens != count:
                                raise RuntimeError(f"wrong answer: {result}")
                        if rep:
                            ms = (time.process_time() - started) * 1000 / CALLS
                            figures.setdefault((way, model), []).append(ms)
    finally:
        sdk_chunks.install()
        fake.terminate()
        fake.wait(10)
    ours = await own_delta_cost(CHUNKS * CALLS)

    results = Results("litellm_stream")
    print(f"Streamed calls through openai/, CPU of this process, median of {REPS} repetitions of {CALLS} calls")
    print(
        f"  {'chunks built by':20} {f'ms/call ({CHUNKS})':>14} {f'ms/call ({SHORT})':>13} {'ms/chunk':>9} {'ratio':>6}"
    )
    per_chunk: dict[str, float] = {}
    for way in ways:
        long = statistics.median(figures[(way, "bench-long")])
        short = statistics.median(figures[(way, "bench-short")])
        per_chunk[way] = (long - short) / (CHUNKS - SHORT)
        ratio = per_chunk[way] / per_chunk["SDK construct_type"]
        print(f"  {way:20} {long:14.2f} {short:13.2f} {per_chunk[way]:9.3f} {ratio:6.2f}")
        results.add(f"streamed call of {CHUNKS} chunks, chunks by {way}", long, "ms", better="lower")
        results.add(f"CPU per streamed chunk, chunks by {way}", per_chunk[way], "ms", better="lower")
    print(f"  our own per delta (EventRun queue + SSE frame): {ours * 1000:.1f} us")
    results.add("our CPU per delta (EventRun + SSE)", ours * 1000, "us", better="lower")
    print(f"  load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    results.save()


async def own_delta_cost(deltas: int) -> float:
    """Milliseconds of CPU per delta of a streamed request's own work: emitted into an EventRun and
    rendered as a server-sent event, as the chat and orchestration streams do."""
    from ultrai_llm.streaming import EventRun, sse

    async def runner(emit: Any) -> dict[str, Any]:
        for i in range(deltas):
            await emit("delta", {"model": MODEL, "stage": "answer", "text": f"w{i} "})
        return {}

    started = time.process_time()
    run = EventRun(runner)
    while (item := await run.next()) is not None:
        sse(*item)
    return (time.process_time() - started) * 1000 / deltas


async def main() -> None:
    from tools.stack import free_port

    if CHUNKS:
        await long_streams()
        return

    port = free_port()
    fake = start_fake(port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            engines = {route: engine_for(route, f"http://127.0.0.1:{port}/v1", Path(tmp)) for route in ROUTES}
            kinds = [(c, s) for s in (False, True) for c in (False, True)]
            for route, engine in engines.items():  # imports, connections and litellm's first-call set-up
                for concurrent, stream in kinds:
                    if not (stream and route in NO_STREAM):
                        await cpu_per_call(route, engine, concurrent, stream)
            figures: dict[tuple[str, bool, bool], list[float]] = {}
            for _ in range(REPS):
                for concurrent, stream in kinds:
                    for route, engine in engines.items():
                        if stream and route in NO_STREAM:
                            continue
                        figures.setdefault((route, concurrent, stream), []).append(
                            await cpu_per_call(route, engine, concurrent, stream)
                        )
    finally:
        fake.terminate()
        fake.wait(10)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)

    results = Results("litellm_call")
    print(f"CPU of this process per call (ms), median of {REPS} repetitions of {CALLS} calls")
    print(f"  {'route':18} {'how':22} {'ms/call':>8} {'vs openai/':>10}   (min - max)")
    for concurrent, stream in kinds:
        how = f"{'5 at a time' if concurrent else 'sequential'}, {'stream' if stream else 'whole'}"
        base = statistics.median(figures[("openai", concurrent, stream)])
        for route in ROUTES:
            if (route, concurrent, stream) not in figures:
                print(f"  {route + '/':18} {how:22} {'n/a':>8}")
                continue
            values = figures[(route, concurrent, stream)]
            value = statistics.median(values)
            spread = f"({min(values):.2f} - {max(values):.2f})"
            print(f"  {route + '/':18} {how:22} {value:8.2f} {value / base:10.2f}   {spread}")
            results.add(f"{route}/ CPU per call, {how}", value, "ms", better="lower")
    print(f"  load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    results.save()


if __name__ == "__main__":
    asyncio.run(main())
