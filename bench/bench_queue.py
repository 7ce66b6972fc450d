"""Analyses on the Redis queue: enqueue-to-start latency, model answer to SSE client, throughput.

The real processes (auth, llm on the fake OpenAI-compatible provider, gateway, two documents
instances that only enqueue, analysis workers), on PostgreSQL and Redis:

1. Enqueue-to-start p50/p99: the analysis' ``created_at`` (its row and its job are written by
   the request) to its ``started_at`` (a worker claimed it), analyses started one every 100 ms.
2. Model answer to SSE client p50: from the moment the fake provider answers a model to the moment
   that model's ``model`` event reaches a client streaming the analysis from the *other* documents
   instance (llm -> worker -> PostgreSQL -> Redis pub/sub -> instance -> client). Before the queue
   the stream polled the database every 250 ms.
3. Analyses per minute with 1 and 2 workers, each running ``CONCURRENCY`` at once, every model
   answering after 300 ms (two models, no synthesis).

Usage: python bench/bench_queue.py [sse]   (about two minutes, or part 2 alone; needs PostgreSQL and Redis on loopback,
BENCH_DATABASE_URL / BENCH_REDIS_URL to point elsewhere)
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "services" / "documents")]

from tests.fakes.openai_server import FakeOpenAI  # noqa: E402
from tests.support.users import bearer, new_access_token  # noqa: E402
from tools.stack import Stack  # noqa: E402

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
API = "/api/v1/documents"
CONCURRENCY = 4  # analyses at once per worker
MODEL_SECONDS = 0.3
LATENCY_ANALYSES = 40
SSE_ANALYSES = 20
THROUGHPUT_ANALYSES = 60


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def start(client: httpx.AsyncClient, doc: str, question: str, models: list[str]) -> dict[str, Any]:
    resp = await client.post(f"{API}/{doc}/analyses", json={"kind": "qa", "question": question, "models": models})
    resp.raise_for_status()
    return dict(resp.json())


async def until_done(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    while True:
        body = (await client.get(url)).json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return dict(body)
        await asyncio.sleep(0.05)


async def enqueue_to_start(a: httpx.AsyncClient, b: httpx.AsyncClient, doc: str) -> None:
    tag = secrets.token_hex(3)
    started = []
    for i in range(LATENCY_ANALYSES):
        started.append(await start(a if i % 2 else b, doc, f"Latency {tag}-{i}?", ["bench-a"]))
        await asyncio.sleep(0.1)
    finals = await asyncio.gather(*(until_done(a, s["links"]["self"]) for s in started))
    lat = [(ts(f["started_at"]) - ts(f["created_at"])) * 1000 for f in finals]
    print(
        f"1. enqueue to start: p50 {statistics.median(lat):6.1f} ms, p99 {pct(lat, 0.99):6.1f} ms ({len(lat)} analyses)"
    )


async def answer_to_client(
    a: httpx.AsyncClient, b: httpx.AsyncClient, doc: str, fake: FakeOpenAI, db: asyncpg.Connection
) -> None:
    tag = secrets.token_hex(3)
    delays: list[float] = []
    llm_hops: list[float] = []
    for i in range(SSE_ANALYSES):
        question = f"Streamed {tag}-{i}?"
        analysis = await start(b, doc, question, ["bench-slow"])
        arrived: float | None = None
        data: dict[str, Any] = {}
        async with a.stream("GET", analysis["links"]["self"] + "/events") as resp:
            name = ""
            async for line in resp.aiter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name == "model":
                    arrived = time.time()
                    data = json.loads(line[6:])
                    break
        calls = [c for c in fake.calls("bench-slow") if question in json.dumps(c.body)]
        if data.get("status") != "ok" or not calls:
            raise RuntimeError(f"analysis {analysis['id']}: {data} ({len(calls)} calls)")
        call = calls[0]
        answered = call.at + MODEL_SECONDS  # the fake answers after its delay
        if arrived is not None:
            delays.append((arrived - answered) * 1000)
            # When the worker recorded the event (its row's created_at, set just before the commit):
            # before it, the answer's way back through llm; after it, our push to the client.
            recorded = await db.fetchval(
                "SELECT created_at FROM documents.analysis_events WHERE analysis_id = $1 AND event = 'model'",
                analysis["id"],
            )
            llm_hops.append((recorded.timestamp() - answered) * 1000)
        await until_done(a, analysis["links"]["self"])
    print(
        f"2. model answer to SSE client (other instance): p50 {statistics.median(delays):6.1f} ms, "
        f"p90 {pct(delays, 0.9):6.1f} ms ({len(delays)} analyses; the stream used to poll every 250 ms)"
    )
    print(
        f"   of which: the answer back through llm to the worker's record p50 {statistics.median(llm_hops):6.1f} ms; "
        f"from the record to the client (commit, pub/sub, read, stream) p50 "
        f"{statistics.median(d - h for d, h in zip(delays, llm_hops, strict=True)):6.1f} ms"
    )


async def throughput(a: httpx.AsyncClient, b: httpx.AsyncClient, doc: str, workers: int) -> None:
    tag = secrets.token_hex(3)
    t0 = time.perf_counter()
    started = await asyncio.gather(
        *(
            start(a if i % 2 else b, doc, f"Throughput {tag}-{i}?", ["bench-a", "bench-b"])
            for i in range(THROUGHPUT_ANALYSES)
        )
    )
    finals = await asyncio.gather(*(until_done(a, s["links"]["self"]) for s in started))
    elapsed = time.perf_counter() - t0
    ok = sum(1 for f in finals if f["status"] == "completed")
    ideal = workers * CONCURRENCY / MODEL_SECONDS * 60
    print(
        f"3. {workers} worker(s) x {CONCURRENCY}: {ok / elapsed * 60:6.0f} analyses/min "
        f"({ok}/{len(finals)} completed in {elapsed:.1f} s; the models alone would allow {ideal:.0f}/min)"
    )


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    db_name = f"bench_queue_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(DATABASE_URL)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    prefix = f"bench-queue-{secrets.token_hex(3)}"
    try:
        with FakeOpenAI() as fake:
            fake.behave("bench-a", delay=MODEL_SECONDS)
            fake.behave("bench-b", delay=MODEL_SECONDS)
            fake.behave("bench-slow", delay=MODEL_SECONDS)
            models = fake.models_file(tmp / "models.json", ["bench-a", "bench-b", "bench-slow"])
            base, _, _ = DATABASE_URL.rpartition("/")
            env = {
                "LLM_MODELS_FILE": str(models),
                "DATABASE_URL": f"{base}/{db_name}",
                "REDIS_URL": REDIS_URL,
                "REDIS_KEY_PREFIX": prefix,
                "ANALYSIS_RUNNER": "queue",
                "ANALYSIS_WEB_CONSUMES": "false",
                "ANALYSIS_WORKERS": str(CONCURRENCY),
                "ANALYSIS_MAX_ACTIVE_PER_USER": "1000",
                "RATE_LIMIT_PER_MINUTE": "100000",
                "RATE_LIMIT_PER_HOUR": "1000000",
                "LLM_NUM_RETRIES": "0",
                "ENABLE_CACHE": "false",
            }
            stack = Stack(tmp / "stack", env)
            await asyncio.to_thread(stack.start_all)
            try:
                await asyncio.to_thread(stack.start_extra, "documents", "documents-b")
                await asyncio.to_thread(stack.start_extra, "documents", "worker-1", worker=True)
                headers = bearer(await new_access_token(stack.url("gateway"), "bench"))
                async with (
                    httpx.AsyncClient(base_url=stack.url("documents"), headers=headers, timeout=120) as a,
                    httpx.AsyncClient(base_url=stack.procs["documents-b"].url, headers=headers, timeout=120) as b,
                ):
                    text = "The committee meets on Tuesdays and decides by vote. " * 20
                    up = await a.post(API, files={"file": ("memo.txt", text.encode(), "text/plain")})
                    up.raise_for_status()
                    doc = up.json()["id"]
                    print(f"queue bench: PostgreSQL, Redis, models answering after {MODEL_SECONDS * 1000:.0f} ms")
                    if "sse" not in sys.argv[1:]:
                        await throughput(a, b, doc, 1)
                    await asyncio.to_thread(stack.start_extra, "documents", "worker-2", worker=True)
                    if "sse" not in sys.argv[1:]:
                        await throughput(a, b, doc, 2)
                        await enqueue_to_start(a, b, doc)
                    db = await asyncpg.connect(env["DATABASE_URL"])
                    try:
                        await answer_to_client(a, b, doc, fake, db)
                    finally:
                        await db.close()
            finally:
                stack.stop_all()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.close()
        redis = Redis.from_url(REDIS_URL)
        async for key in redis.scan_iter(match=f"*{prefix}*"):
            await redis.delete(key)
        await redis.aclose()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
