"""Analyses on the Redis queue: enqueue-to-start latency, model answer to SSE client, throughput.

The real processes (auth, llm on the fake OpenAI-compatible provider, gateway, two documents
instances that only enqueue, analysis workers), on PostgreSQL and Redis:

1. Enqueue-to-start p50/p99: the analysis' ``created_at`` (its row and its job are written by
   the request) to its ``started_at`` (a worker claimed it), analyses started one every 100 ms.
2. Model answer to SSE client p50: from the moment the fake provider answers a model to the moment
   that model's ``model`` event reaches a client streaming the analysis from the *other* documents
   instance (llm -> worker -> PostgreSQL -> Redis pub/sub -> instance -> client). Before the queue
   the stream polled the database every 250 ms.
3. Analyses per minute with 1, 2 and 4 workers, each running ``CONCURRENCY`` at once, every model
   answering after 300 ms (two models, no synthesis), ``ROUNDS`` analyses per slot; the ratio of
   2 workers to 1 (the goal: at least 1.8). The rate is the analyses completed over the time from
   the first one's creation to the last one's end (the database's timestamps).
4. Database transactions per second (``pg_stat_database`` ``xact_commit + xact_rollback`` of the service's database)
   while an analysis runs (its model held at the provider), with 0 and then ``WATCHERS`` SSE clients
   streaming it (half on each instance), over ``WINDOW_SECONDS`` each. With Redis a stream reads the
   database on news and every ``SSE_FALLBACK_SECONDS`` (5 s) in case a notification was lost.

Usage: python bench/bench_queue.py [sse|watchers]   (about five minutes, or part 2 or 4 alone; needs
PostgreSQL and Redis on loopback, BENCH_DATABASE_URL / BENCH_REDIS_URL to point elsewhere)
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
ROUNDS = 10  # analyses per worker slot in the throughput runs
WATCHERS = 200
WINDOW_SECONDS = 20.0  # PostgreSQL flushes a backend's counters within about 10 s


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


async def throughput(
    a: httpx.AsyncClient, b: httpx.AsyncClient, doc: str, workers: int, db: asyncpg.Connection
) -> float:
    """Analyses per minute with ``workers`` workers; returns it."""
    tag = secrets.token_hex(3)
    count = ROUNDS * workers * CONCURRENCY
    started = await asyncio.gather(
        *(start(a if i % 2 else b, doc, f"Throughput {tag}-{i}?", ["bench-a", "bench-b"]) for i in range(count))
    )
    ids = [s["id"] for s in started]
    # Watched in the database (one query every 200 ms), not by polling each analysis over HTTP.
    while True:
        row = await db.fetchrow(
            "SELECT count(*) FILTER (WHERE status IN ('completed', 'failed', 'cancelled')) AS done,"
            " count(*) FILTER (WHERE status = 'completed') AS ok,"
            " extract(epoch FROM max(finished_at) - min(created_at)) AS took"
            " FROM documents.analyses WHERE id = ANY($1::text[])",
            ids,
        )
        if row["done"] == count:
            break
        await asyncio.sleep(0.2)
    elapsed = float(row["took"])
    rate = row["ok"] / elapsed * 60
    ideal = workers * CONCURRENCY / MODEL_SECONDS * 60
    print(
        f"3. {workers} worker(s) x {CONCURRENCY}: {rate:6.0f} analyses/min "
        f"({row['ok']}/{count} completed in {elapsed:.1f} s; the models alone would allow {ideal:.0f}/min)"
    )
    return rate


async def xacts(db: asyncpg.Connection) -> float:
    await db.execute("SELECT pg_stat_clear_snapshot()")
    # Both ends of a transaction: a read-only session ends with a rollback.
    return float(
        await db.fetchval("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")
    )


async def transactions_per_second(db: asyncpg.Connection) -> float:
    # What happened before the window reaches the counters first (backends flush them when idle,
    # within about 10 s).
    await asyncio.sleep(11)
    before = await xacts(db)
    t0 = time.perf_counter()
    await asyncio.sleep(WINDOW_SECONDS)
    after = await xacts(db)
    # Less this connection's own two reads.
    return (after - before - 2) / (time.perf_counter() - t0)


async def watchers(
    a: httpx.AsyncClient, b: httpx.AsyncClient, doc: str, fake: FakeOpenAI, db: asyncpg.Connection
) -> None:
    gate = fake.hold("bench-hold")
    question = f"Watched {secrets.token_hex(3)}?"
    analysis = await start(a, doc, question, ["bench-hold"])
    url = analysis["links"]["self"]
    streams: list[asyncio.Task[int]] = []
    connected = asyncio.Semaphore(0)

    async def watch(client: httpx.AsyncClient) -> int:
        """Follows the stream to its end; counts its events."""
        events = 0
        async with client.stream("GET", url + "/events") as resp:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                if line.startswith("event: "):
                    if events == 0:
                        connected.release()
                    events += 1
        return events

    try:
        while not [c for c in fake.calls("bench-hold") if question in json.dumps(c.body)]:
            await asyncio.sleep(0.05)
        idle = await transactions_per_second(db)
        limits = httpx.Limits(max_connections=WATCHERS, max_keepalive_connections=0)
        async with (
            httpx.AsyncClient(base_url=str(a.base_url), headers=a.headers, timeout=300, limits=limits) as wa,
            httpx.AsyncClient(base_url=str(b.base_url), headers=b.headers, timeout=300, limits=limits) as wb,
        ):
            streams = [asyncio.create_task(watch(wa if i % 2 else wb)) for i in range(WATCHERS)]
            for _ in range(WATCHERS):
                await asyncio.wait_for(connected.acquire(), 60)
            watched = await transactions_per_second(db)
            gate.set()
            counts = await asyncio.gather(*streams)
        print(
            f"4. database transactions/s (commits and rollbacks) while an analysis runs: "
            f"{idle:5.1f} with 0 SSE watchers, {watched:5.1f} with {WATCHERS} "
            f"({WINDOW_SECONDS:.0f} s each; every watcher saw {min(counts)}-{max(counts)} events)"
        )
    finally:
        gate.set()
        for task in streams:
            task.cancel()


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
            models = fake.models_file(tmp / "models.json", ["bench-a", "bench-b", "bench-slow", "bench-hold"])
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
                    parts = set(sys.argv[1:]) or {"throughput", "latency", "sse", "watchers"}
                    db = await asyncpg.connect(env["DATABASE_URL"])
                    try:
                        rates: dict[int, float] = {}
                        for n in (1, 2, 4):
                            while len([p for p in stack.procs if p.startswith("worker-")]) < n:
                                label = f"worker-{len([p for p in stack.procs if p.startswith('worker-')]) + 1}"
                                await asyncio.to_thread(stack.start_extra, "documents", label, worker=True)
                            if "throughput" in parts:
                                rates[n] = await throughput(a, b, doc, n, db)
                            if n == 2 and "latency" in parts:
                                await enqueue_to_start(a, b, doc)
                        if rates:
                            print(
                                f"   2 workers / 1 worker: {rates[2] / rates[1]:.2f}x (goal 1.8x); "
                                f"4 / 1: {rates[4] / rates[1]:.2f}x"
                            )
                        if "sse" in parts:
                            await answer_to_client(a, b, doc, fake, db)
                        if "watchers" in parts:
                            await watchers(a, b, doc, fake, db)
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
