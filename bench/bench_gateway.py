"""Load through the gateway versus straight to the services, in the same run.

Throughput: wrk (closed loop, 2 threads, 32 connections) per path, gateway vs direct.
Latency: locust headless at a fixed arrival rate (open loop) per path, gateway vs direct.
The mix: health (/live), auth (/api/v1/auth/me) and document reads (list and one document), with a
real user's token. The stack runs as `make dev` runs it (SQLite, in-process cache), with the
gateway's rate limits raised out of the way.

Usage: python bench/bench_gateway.py [seconds per wrk run]   (needs wrk and locust on PATH/venv)
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.stack import Stack  # noqa: E402

HERE = Path(__file__).resolve().parent


def prepare(stack: Stack) -> tuple[str, str]:
    gw = stack.url("gateway")
    email, password = "bench@example.com", "correct horse battery staple"
    with httpx.Client(timeout=30) as client:
        client.post(gw + "/api/v1/auth/register", json={"email": email, "password": password})
        token = client.post(gw + "/api/v1/auth/login", json={"email": email, "password": password}).json()[
            "access_token"
        ]
        auth = {"Authorization": f"Bearer {token}"}
        doc = client.post(
            gw + "/api/v1/documents",
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


def locust(host: str, paths: list[str], token: str, users: int, seconds: int, workdir: Path) -> dict:
    out = workdir / "locust-times.json"
    out.unlink(missing_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(HERE / "locustfile.py"),
            "--headless",
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{seconds}s",
            "--host",
            host,
            "--only-summary",
            "--loglevel",
            "ERROR",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_PATHS": ",".join(paths), "BENCH_TOKEN": token, "BENCH_OUT": str(out)},
        check=False,
    )
    data = json.loads(out.read_text())
    times = sorted(data["times_ms"])
    if not times:
        return {"requests": 0, "failures": data["failures"], "p50_ms": float("nan"), "p99_ms": float("nan")}
    return {
        "requests": len(times),
        "failures": data["failures"],
        "p50_ms": statistics.median(times),
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
    }


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="ultrai-bench-"))
    stack = Stack(
        workdir,
        {
            "LOG_LEVEL": "WARNING",
            "RATE_LIMIT_PER_MINUTE": "100000000",
            "RATE_LIMIT_PER_HOUR": "1000000000",
            "LOGIN_RATE_LIMIT_PER_MINUTE": "100000",
        },
    )
    try:
        stack.start_all()
        token, doc_id = prepare(stack)
        mix = [
            ("health", "gateway", "/live", "auth", "/live"),
            ("auth me", "gateway", "/api/v1/auth/me", "auth", "/api/v1/auth/me"),
            ("doc list", "gateway", "/api/v1/documents?limit=10", "documents", "/api/v1/documents?limit=10"),
            ("doc get", "gateway", f"/api/v1/documents/{doc_id}", "documents", f"/api/v1/documents/{doc_id}"),
        ]
        print(f"wrk: 2 threads, 32 connections, {seconds} s per run; one run each, same machine (2 cores)")
        print(
            f"{'path':<10} {'gateway rps':>12} {'direct rps':>11} {'ratio':>6} {'gw p50':>8} {'dir p50':>8} "
            f"{'gw p99':>8} {'dir p99':>8} {'errors':>7}"
        )
        ratios = []
        for label, _, path, service, direct_path in mix:
            via = wrk(stack.url("gateway") + path, seconds, token)
            direct = wrk(stack.url(service) + direct_path, seconds, token)
            ratio = via["rps"] / direct["rps"]
            ratios.append(ratio)
            print(
                f"{label:<10} {via['rps']:>12.0f} {direct['rps']:>11.0f} {ratio:>6.2f} {via['p50_ms']:>8.2f} "
                f"{direct['p50_ms']:>8.2f} {via['p99_ms']:>8.2f} {direct['p99_ms']:>8.2f} "
                f"{via['errors'] + direct['errors']:>7}"
            )
        print(f"median throughput ratio gateway/direct: {statistics.median(ratios):.2f}")

        users, lseconds = 100, 15
        print(f"\nlocust fixed rate: {users} users x 1 req/s per path, {lseconds} s per run")
        print(
            f"{'path':<10} {'gw p50':>8} {'dir p50':>8} {'p50 overhead':>13} {'gw p99':>8} {'dir p99':>8} "
            f"{'failures':>9}"
        )
        overheads = []
        for label, _, path, service, direct_path in mix:
            via = locust(stack.url("gateway"), [path], token, users, lseconds, workdir)
            direct = locust(stack.url(service), [direct_path], token, users, lseconds, workdir)
            overhead = via["p50_ms"] - direct["p50_ms"]
            overheads.append(overhead)
            print(
                f"{label:<10} {via['p50_ms']:>8.1f} {direct['p50_ms']:>8.1f} {overhead:>13.1f} "
                f"{via['p99_ms']:>8.1f} {direct['p99_ms']:>8.1f} {via['failures'] + direct['failures']:>9}"
            )
        print(
            f"median p50 overhead of the gateway: {statistics.median(overheads):.1f} ms "
            "(locust reports whole milliseconds)"
        )
    finally:
        stack.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
