"""A bounded soak: steady mixed load on the whole stack for a few minutes, sampling each service's
resident memory, open file descriptors and (on PostgreSQL) database connections, to show memory
flat and nothing leaking once the load stops.

Usage: python bench/bench_soak.py [seconds=180] [requests per second=100]
On PostgreSQL when SOAK_DATABASE_URL is set (an admin URL; a scratch database is created and
dropped), with Redis when SOAK_REDIS_URL is set; otherwise on the embedded defaults.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.users import bearer, new_email, register_and_login  # noqa: E402
from tools.bench_results import Results  # noqa: E402
from tools.stack import Stack  # noqa: E402

NAMES = ("gateway", "auth", "documents", "llm")


def sample(stack: Stack) -> dict[str, tuple[float, int]]:
    out = {}
    for name in NAMES:
        proc = psutil.Process(stack.procs[name].proc.pid)
        out[name] = (proc.memory_info().rss / 1e6, proc.num_fds())
    return out


async def db_connections(admin: str | None, db: str | None) -> int | None:
    if not admin or not db:
        return None
    import asyncpg

    conn = await asyncpg.connect(admin)
    try:
        return await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", db)
    finally:
        await conn.close()


async def load(gw: str, seconds: float, rate: float) -> tuple[int, int, list[float]]:
    async with httpx.AsyncClient(base_url=gw, timeout=30, limits=httpx.Limits(max_connections=64)) as client:
        _, tokens = await register_and_login(client, new_email("soak"))
        auth = bearer(tokens["access_token"])
        doc = (
            await client.post(
                "/api/v1/documents",
                headers=auth,
                files={"file": ("s.md", b"# soak\n" + b"words " * 500, "text/markdown")},
            )
        ).json()["id"]
        paths = ["/health", "/api/v1/auth/me", "/api/v1/documents", f"/api/v1/documents/{doc}", "/api/v1/llm/models"]
        ok = errors = 0
        latencies: list[float] = []
        tasks: set[asyncio.Task] = set()

        async def one(path: str) -> None:
            nonlocal ok, errors
            started = time.perf_counter()
            try:
                resp = await client.get(path, headers=auth)
                ok += resp.status_code < 500
                errors += resp.status_code >= 500
            except httpx.HTTPError:
                errors += 1
            latencies.append((time.perf_counter() - started) * 1000)

        interval = 1 / rate
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < seconds:
            # open loop: requests leave on schedule whether or not earlier ones have answered
            target = start + i * interval
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(paths[i % len(paths)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            # a token refresh now and then, as a frontend does
            if i % 500 == 499:
                refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
                if refreshed.status_code == 200:
                    tokens = refreshed.json()
                    auth = bearer(tokens["access_token"])
            i += 1
        await asyncio.gather(*tasks)
        return ok, errors, latencies


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 180
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 100
    admin = os.environ.get("SOAK_DATABASE_URL")
    redis = os.environ.get("SOAK_REDIS_URL")
    workdir = Path(tempfile.mkdtemp(prefix="ultrai-soak-"))
    env = {"LOG_LEVEL": "WARNING", "RATE_LIMIT_PER_MINUTE": "1000000", "RATE_LIMIT_PER_HOUR": "100000000"}
    db_name = None
    if admin:
        import asyncpg

        db_name = f"ultrai_soak_{secrets.token_hex(3)}"

        async def create() -> None:
            conn = await asyncpg.connect(admin)
            await conn.execute(f'CREATE DATABASE "{db_name}"')
            await conn.close()

        asyncio.run(create())
        env["DATABASE_URL"] = admin.rsplit("/", 1)[0] + "/" + db_name
    if redis:
        env["REDIS_URL"], env["REDIS_KEY_PREFIX"] = redis, f"soak-{secrets.token_hex(3)}"
    stack = Stack(workdir, env)
    try:
        stack.start_all()
        # Warm up first, so pools and caches are at their working size: the baseline is a warm
        # service, and what grows after it is growth, not first use.
        warm = max(10.0, seconds / 10)
        asyncio.run(load(stack.url("gateway"), warm, rate))
        time.sleep(6)
        baseline = sample(stack)
        conns0 = asyncio.run(db_connections(admin, db_name))
        print(
            f"soak: {seconds:.0f} s at {rate:.0f} req/s (open loop) through the gateway; "
            f"{'PostgreSQL' if admin else 'SQLite'}, {'Redis' if redis else 'in-process cache'}"
        )
        samples: list[dict[str, tuple[float, int]]] = []

        async def run() -> tuple[int, int, list[float]]:
            job = asyncio.create_task(load(stack.url("gateway"), seconds, rate))
            while not job.done():
                samples.append(await asyncio.to_thread(sample, stack))
                await asyncio.sleep(5)
            return await job

        ok, errors, latencies = asyncio.run(run())
        conns_load = asyncio.run(db_connections(admin, db_name))
        time.sleep(6)  # idle, as after the warm-up
        after = sample(stack)
        conns1 = asyncio.run(db_connections(admin, db_name))
        latencies.sort()
        print(
            f"requests: {ok + errors}, 5xx or failed: {errors}, p50 {statistics.median(latencies):.1f} ms, "
            f"p99 {latencies[int(len(latencies) * 0.99)]:.1f} ms"
        )
        # PostgreSQL and Redis change what is measured (and add the connections): each setup is
        # compared with its own runs.
        results = Results("soak" + ("_postgres" if admin else "") + ("_redis" if redis else ""))
        results.add("5xx or failed", errors, "", better="lower")
        results.add("p50", statistics.median(latencies), "ms", better="lower")
        results.add("p99", latencies[int(len(latencies) * 0.99)], "ms", better="lower")
        print(
            f"{'service':<10} {'RSS warm':>9} {'RSS 1st third':>13} {'RSS last third':>14} {'RSS end':>8} "
            f"{'fds warm':>9} {'fds end':>8}"
        )
        third = max(1, len(samples) // 3)
        for name in NAMES:
            early = statistics.median(s[name][0] for s in samples[:third])
            late = statistics.median(s[name][0] for s in samples[-third:])
            print(
                f"{name:<10} {baseline[name][0]:>9.1f} {early:>13.1f} {late:>14.1f} {after[name][0]:>8.1f} "
                f"{baseline[name][1]:>9} {after[name][1]:>8}"
            )
            results.add(f"{name} RSS warm", baseline[name][0], "MB", better="lower")
            results.add(f"{name} RSS 1st third", early, "MB", better="lower")
            results.add(f"{name} RSS last third", late, "MB", better="lower")
            results.add(f"{name} RSS end", after[name][0], "MB", better="lower")
            results.add(f"{name} fds warm", baseline[name][1], "", better="lower")
            results.add(f"{name} fds end", after[name][1], "", better="lower")
        if admin:
            print(f"database connections: {conns0} warm, {conns_load} at the end of the load, {conns1} after")
        results.add("database connections warm", conns0, "", better="lower")
        results.add("database connections at the end of the load", conns_load, "", better="lower")
        results.add("database connections after", conns1, "", better="lower")
        results.save()
    finally:
        stack.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
        if db_name:

            async def drop() -> None:
                conn = await asyncpg.connect(admin)
                await conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
                await conn.close()

            asyncio.run(drop())


if __name__ == "__main__":
    main()
