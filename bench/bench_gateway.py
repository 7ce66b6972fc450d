"""Load through the gateway versus straight to the services, in the same run.

Throughput: wrk (closed loop, 2 threads, 32 connections) per path, gateway vs direct, and the
gateway's own CPU time per request in those runs (user + system of its process, over the requests
wrk counted: what a proxied request costs the gateway, whatever the machine's load).
Latency: a fixed arrival rate (open loop) per path, gateway vs direct. Locust headless was the first
generator here, but on two cores its own gevent work added tens of milliseconds to every answer
and swamped the sub-millisecond hop being measured; a light asyncio sender on a fixed schedule
measures the hop itself.
The mix: health (each one's own /live, and the public JWKS through the gateway), auth
(/api/v1/auth/me) and document reads (list and one document), with a real user's token. The fixed
rate is kept well under capacity (25 req/s per path), so latency is service time plus the hop,
not queueing. The stack runs as `make dev` runs it (SQLite, in-process cache), with the
gateway's rate limits raised out of the way.

Usage: python bench/bench_gateway.py [seconds per wrk run]   (needs wrk: apt-get install wrk)
"""

from __future__ import annotations

import asyncio
import json
import os
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

from tests.support.users import bearer, new_email, register_and_login_sync  # noqa: E402
from tools.bench_results import Results  # noqa: E402
from tools.stack import Stack  # noqa: E402

HERE = Path(__file__).resolve().parent


def prepare(stack: Stack) -> tuple[str, str]:
    with httpx.Client(base_url=stack.url("gateway"), timeout=30) as client:
        _, tokens = register_and_login_sync(client, new_email("bench"))
        token = tokens["access_token"]
        auth = bearer(token)
        doc = client.post(
            "/api/v1/documents",
            headers=auth,
            files={"file": ("notes.md", b"# Bench\n\n" + b"Some text to read. " * 200, "text/markdown")},
        )
        doc.raise_for_status()
    return token, doc.json()["id"]


def wrk(url: str, seconds: int, token: str) -> dict:
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", str(HERE / "wrk_report.lua"), url],
        capture_output=True,
        text=True,
        env={**os.environ, "WRK_TOKEN": token},
        check=True,
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    data = json.loads(line)
    data["rps"] = data["requests"] / data["seconds"]
    return data


async def _open_loop(url: str, token: str, rate: float, seconds: float) -> tuple[list[float], int]:
    """Requests leave on a fixed schedule whether or not earlier ones have answered (open loop), so
    a slow answer cannot slow the sender down and hide tail latency."""
    latencies: list[float] = []
    failures = 0
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=256)) as client:

        async def one() -> None:
            nonlocal failures
            started = time.perf_counter()
            try:
                resp = await client.get(url, headers=headers)
                if resp.status_code >= 400:
                    failures += 1
            except httpx.HTTPError:
                failures += 1
            latencies.append((time.perf_counter() - started) * 1000)

        await client.get(url, headers=headers)  # open the connection first
        tasks = []
        begin = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies, failures


# The stack's environment: quiet logs, and the rate limits out of the way of the load.
STACK_ENV = {
    "LOG_LEVEL": "WARNING",
    "RATE_LIMIT_PER_MINUTE": "100000000",
    "RATE_LIMIT_PER_HOUR": "1000000000",
    # auth's login throttle, out of the way of the benches that log in many times
    "LOGIN_RATE_PER_ADDRESS": "1000000/minute",
    "LOGIN_ATTEMPTS_PER_ACCOUNT": "1000000/minute",
}


def fixed_rate(url: str, token: str, rate: float, seconds: float) -> dict:
    times, failures = asyncio.run(_open_loop(url, token, rate, seconds))
    times.sort()
    return {"p50_ms": statistics.median(times), "p99_ms": times[int(len(times) * 0.99)], "failures": failures}


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="ultrai-bench-"))
    stack = Stack(
        workdir,
        STACK_ENV,
    )
    try:
        stack.start_all()
        token, doc_id = prepare(stack)
        mix = [
            ("live", "gateway", "/live", "auth", "/live"),  # each one's own liveness: no hop
            ("jwks", "gateway", "/.well-known/jwks.json", "auth", "/.well-known/jwks.json"),  # public, proxied
            ("auth me", "gateway", "/api/v1/auth/me", "auth", "/api/v1/auth/me"),
            ("doc list", "gateway", "/api/v1/documents?limit=10", "documents", "/api/v1/documents?limit=10"),
            ("doc get", "gateway", f"/api/v1/documents/{doc_id}", "documents", f"/api/v1/documents/{doc_id}"),
        ]
        print(f"wrk: 2 threads, 32 connections, {seconds} s per run; one run each, same machine (2 cores)")
        print(
            f"{'path':<10} {'gateway rps':>12} {'direct rps':>11} {'ratio':>6} {'gw p50':>8} {'dir p50':>8} "
            f"{'gw p99':>8} {'dir p99':>8} {'errors':>7} {'gw CPU/req':>11}"
        )
        results = Results("gateway")
        ratios = []
        for label, _, path, service, direct_path in mix:
            cpu_before = stack.procs["gateway"].cpu_seconds()
            via = wrk(stack.url("gateway") + path, seconds, token)
            cpu_ms = (stack.procs["gateway"].cpu_seconds() - cpu_before) * 1000 / max(via["requests"], 1)
            direct = wrk(stack.url(service) + direct_path, seconds, token)
            ratio = via["rps"] / direct["rps"]
            ratios.append(ratio)
            results.add(f"{label} gateway rps", via["rps"], "req/s", better="higher")
            results.add(f"{label} throughput ratio gateway/direct", ratio, "x", better="higher")
            results.add(f"{label} gateway CPU per request", cpu_ms, "ms", better="lower")
            print(
                f"{label:<10} {via['rps']:>12.0f} {direct['rps']:>11.0f} {ratio:>6.2f} {via['p50_ms']:>8.2f} "
                f"{direct['p50_ms']:>8.2f} {via['p99_ms']:>8.2f} {direct['p99_ms']:>8.2f} "
                f"{via['errors'] + direct['errors']:>7} {cpu_ms:>8.3f} ms"
            )
        print(f"median throughput ratio gateway/direct: {statistics.median(ratios):.2f}")

        rate, lseconds = 50.0, 10
        print(f"\nfixed rate (open loop): {rate:.0f} req/s per path, {lseconds} s per run")
        print(
            f"{'path':<10} {'gw p50':>8} {'dir p50':>8} {'p50 overhead':>13} {'gw p99':>8} {'dir p99':>8} "
            f"{'failures':>9}"
        )
        overheads = []
        for label, _, path, service, direct_path in mix:
            via = fixed_rate(stack.url("gateway") + path, token, rate, lseconds)
            direct = fixed_rate(stack.url(service) + direct_path, token, rate, lseconds)
            overhead = via["p50_ms"] - direct["p50_ms"]
            overheads.append(overhead)
            results.add(f"{label} p50 overhead", overhead, "ms", better="lower")
            print(
                f"{label:<10} {via['p50_ms']:>8.1f} {direct['p50_ms']:>8.1f} {overhead:>13.1f} "
                f"{via['p99_ms']:>8.1f} {direct['p99_ms']:>8.1f} {via['failures'] + direct['failures']:>9}"
            )
        print(f"median p50 overhead of the gateway: {statistics.median(overheads):.2f} ms")
        results.add("median throughput ratio gateway/direct", statistics.median(ratios), "x", better="higher")
        results.add("median p50 overhead", statistics.median(overheads), "ms", better="lower")
        results.save()
    finally:
        stack.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
