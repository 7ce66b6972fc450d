"""The two candidate queue engines, SAQ and arq, on the analyses' workload: jobs that wait on I/O
for a while (an analysis waits on models), a worker process taking 8 at once, Redis on loopback.

Prints, for each engine: enqueue-to-start latency p50/p99 one job at a time (an idle worker), the
same under a burst of jobs, and jobs per minute with 300 ms jobs. Used once to choose the engine
(docs/architecture.md); the service depends on SAQ only, so arq is measured where it is installed:

    python -m bench.bench_queue_engines                      # SAQ (and arq, if importable)
    BENCH_REDIS_URL=redis://127.0.0.1:6379/0 python -m bench.bench_queue_engines
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

# Run as a module (above) or as a script (make bench): the repo root on the path either way.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.bench_results import Better, Results

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CONCURRENCY = 8
SERIAL_JOBS = 40
BURST_JOBS = 200
JOB_SECONDS = 0.3
THROUGHPUT_JOBS = 160
# The recorded figures (their names as printed): unit and which way is better. The ideal
# jobs/min is printed beside the measured one but is arithmetic, not a measurement.
RECORDED: dict[str, tuple[str, Better]] = {
    "idle p50 ms": ("ms", "lower"),
    "idle p99 ms": ("ms", "lower"),
    "burst p50 ms": ("ms", "lower"),
    "burst p99 ms": ("ms", "lower"),
    "jobs/min (300 ms)": ("jobs/min", "higher"),
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---- the job, the same for both engines: record when it started, then wait ---------------------
async def job(ctx: Any, *, enqueued: float, seconds: float, results: str) -> None:
    started = time.time()
    redis: Redis = ctx["bench_redis"] if isinstance(ctx, dict) and "bench_redis" in ctx else ctx.bench_redis
    await redis.rpush(results, json.dumps([enqueued, started]))
    await asyncio.sleep(seconds)
    await redis.rpush(results + ":done", "1")


# ---- workers (each in a process of its own, as in production) ------------------------------------
async def saq_worker(name: str) -> None:
    from saq import Queue, Worker

    queue = Queue.from_url(REDIS_URL, name=name)
    bench_redis = Redis.from_url(REDIS_URL)

    async def startup(ctx: Any) -> None:
        ctx["bench_redis"] = bench_redis

    async def saq_job(ctx: Any, **kwargs: Any) -> None:
        await job(ctx, **kwargs)

    worker = Worker(queue, functions=[("job", saq_job)], concurrency=CONCURRENCY, startup=startup)
    await queue.connect()
    await worker.start()


async def arq_worker(name: str) -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    bench_redis = Redis.from_url(REDIS_URL)

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["bench_redis"] = bench_redis

    async def arq_job(ctx: dict[str, Any], enqueued: float, seconds: float, results: str) -> None:
        await job(ctx, enqueued=enqueued, seconds=seconds, results=results)

    worker = Worker(
        functions=[func(arq_job, name="arq_job")],
        redis_settings=RedisSettings.from_dsn(REDIS_URL),
        queue_name=name,
        max_jobs=CONCURRENCY,
        on_startup=startup,
        handle_signals=True,
    )
    await worker.async_run()


# ---- producers -------------------------------------------------------------------------------
class Producer:
    def __init__(self, engine: str, name: str) -> None:
        self.engine = engine
        self.name = name
        self.client: Any = None

    async def open(self) -> None:
        if self.engine == "saq":
            from saq import Queue

            self.client = Queue.from_url(REDIS_URL, name=self.name)
            await self.client.connect()
        else:
            from arq import create_pool
            from arq.connections import RedisSettings

            self.client = await create_pool(RedisSettings.from_dsn(REDIS_URL), default_queue_name=self.name)

    async def enqueue(self, seconds: float, results: str) -> None:
        kwargs = {"enqueued": time.time(), "seconds": seconds, "results": results}
        if self.engine == "saq":
            await self.client.enqueue("job", timeout=60, **kwargs)
        else:
            await self.client.enqueue_job("arq_job", **kwargs)

    async def close(self) -> None:
        if self.engine == "saq":
            await self.client.disconnect()
        else:
            await self.client.aclose()


async def wait_done(redis: Redis, results: str, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while await redis.llen(results + ":done") < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{results}: not {count} jobs done in {timeout} s")
        await asyncio.sleep(0.02)


async def latencies(redis: Redis, results: str) -> list[float]:
    rows = [json.loads(r) for r in await redis.lrange(results, 0, -1)]
    return [(started - enqueued) * 1000 for enqueued, started in rows]


async def measure(engine: str) -> dict[str, float]:
    name = f"bench-{engine}-{secrets.token_hex(3)}"
    proc = subprocess.Popen([sys.executable, "-m", "bench.bench_queue_engines", "worker", engine, name])
    redis = Redis.from_url(REDIS_URL)
    producer = Producer(engine, name)
    await producer.open()
    out: dict[str, float] = {}
    try:
        await asyncio.sleep(2.0)  # the worker's start
        # One at a time: the latency an idle worker adds.
        serial = f"{name}:serial"
        for i in range(SERIAL_JOBS):
            await producer.enqueue(0.0, serial)
            await wait_done(redis, serial, i + 1)
        lat = await latencies(redis, serial)
        out["idle p50 ms"], out["idle p99 ms"] = statistics.median(lat), pct(lat, 0.99)
        # A burst of short jobs.
        burst = f"{name}:burst"
        for _ in range(BURST_JOBS):
            await producer.enqueue(0.0, burst)
        await wait_done(redis, burst, BURST_JOBS)
        lat = await latencies(redis, burst)
        out["burst p50 ms"], out["burst p99 ms"] = statistics.median(lat), pct(lat, 0.99)
        # Throughput with jobs that wait 300 ms, CONCURRENCY at once.
        through = f"{name}:through"
        t0 = time.perf_counter()
        for _ in range(THROUGHPUT_JOBS):
            await producer.enqueue(JOB_SECONDS, through)
        await wait_done(redis, through, THROUGHPUT_JOBS)
        elapsed = time.perf_counter() - t0
        out["jobs/min (300 ms)"] = THROUGHPUT_JOBS / elapsed * 60
        out["ideal jobs/min"] = CONCURRENCY / JOB_SECONDS * 60
    finally:
        proc.terminate()
        proc.wait(15)
        await producer.close()
        async for key in redis.scan_iter(match=f"{name}*"):
            await redis.delete(key)
        await redis.aclose()
    return out


def available(engine: str) -> bool:
    try:
        __import__(engine)
    except ImportError:
        return False
    return True


async def main() -> None:
    engines = [e for e in ("saq", "arq") if available(e)]
    print(f"queue engines on {REDIS_URL}: {CONCURRENCY} jobs at once in one worker process")
    results = {engine: await measure(engine) for engine in engines}
    keys = list(next(iter(results.values())))
    print(f"{'':<20}" + "".join(f"{e:>12}" for e in engines))
    for key in keys:
        print(f"{key:<20}" + "".join(f"{results[e][key]:>12.1f}" for e in engines))
    for engine in ("saq", "arq"):
        if engine not in engines:
            print(f"({engine} is not installed here)")
    recorded = Results("queue_engines")
    for engine in engines:
        for key, (unit, better) in RECORDED.items():
            recorded.add(f"{engine} {key}", results[engine][key], unit, better=better)
    recorded.save()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        run = saq_worker if sys.argv[2] == "saq" else arq_worker
        try:
            asyncio.run(run(sys.argv[3]))
        except KeyboardInterrupt:
            pass
    else:
        asyncio.run(main())
