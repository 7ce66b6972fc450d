"""The gateway of several commits side by side, in front of the same services, in the same run.

For each git revision given (default: ``main`` and the working tree), the gateway's code
(``shared/`` and ``services/gateway/``) is taken out of that revision and started as in
production (uvicorn, httptools + uvloop, the edge protocol); the services it routes to run once,
from the working tree. Each gateway gets the same wrk runs (closed loop, 2 threads, 32
connections), alternated round by round, on the public JWKS and on /api/v1/auth/me; printed:
requests per second, the gateway's CPU time per request (user + system of its process, over the
requests wrk counted) and its ratio to the first revision's, medians over the rounds. CPU per
request is the figure to compare on a shared machine: wall-clock throughput moves with the load.

A tool for a change's before and after, not one of the benchmarks ``make bench`` runs (nor are its
figures recorded under bench/results/: they are relative to the revisions given).

Usage: python bench/gateway_ab.py [--redis URL] [--seconds N] [--rounds N] [REV ...]
(a REV of "." is the working tree; needs wrk and git)
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_gateway import STACK_ENV, wrk  # noqa: E402
from tests.support.users import new_email, register_and_login_sync  # noqa: E402
from tools.stack import SERVICES, ServiceProcess, Stack, free_port, service_command  # noqa: E402

PATHS = ("/.well-known/jwks.json", "/api/v1/auth/me")
CODE = ("shared", "services/gateway")


def checkout(rev: str, into: Path) -> Path:
    """The gateway's code at ``rev`` ("." : the working tree) in a directory of its own."""
    if rev == ".":
        return ROOT
    archive = subprocess.run(["git", "archive", rev, *CODE], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def start(stack: Stack, label: str, code: Path) -> ServiceProcess:
    spec = SERVICES["gateway"]
    command = service_command(spec, free_port())
    command[command.index("--app-dir") + 1] = str(code / "services" / "gateway")
    env = {**os.environ, **stack.env, "PYTHONPATH": f"{code}{os.pathsep}{code / 'services' / 'gateway'}"}
    process = ServiceProcess(spec, int(command[command.index("--port") + 1]), log_path=stack.workdir / f"{label}.log")
    with (stack.workdir / f"{label}.log").open("ab") as log:
        process.proc = subprocess.Popen(
            command, env=env, cwd=code, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    process.started_at = time.perf_counter()
    process.wait_ready()
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revs", nargs="*", default=["main", "."])
    parser.add_argument("--redis", help="a Redis URL: the stack's rate limits, revocations and cache go there")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="ultrai-bench-"))
    env = dict(STACK_ENV)
    if args.redis:
        env |= {"REDIS_URL": args.redis, "REDIS_KEY_PREFIX": f"bench-ab-{os.getpid()}"}
    stack = Stack(workdir, env, names=("auth", "documents", "llm"))
    gateways: dict[str, ServiceProcess] = {}
    try:
        stack.start_all()
        for n, rev in enumerate(args.revs):
            label = f"{rev} ({n})" if args.revs.count(rev) > 1 else rev
            gateways[label] = start(stack, f"gateway-{n}", checkout(rev, workdir / f"code-{n}"))
        with httpx.Client(base_url=next(iter(gateways.values())).url, timeout=30) as client:
            _, tokens = register_and_login_sync(client, new_email("bench"))
        token = tokens["access_token"]
        runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for path in PATHS:
                for label, gateway in gateways.items():
                    wrk(gateway.url + path, 1, token)  # warm the connections and the caches
                    before = gateway.cpu_seconds()
                    result = wrk(gateway.url + path, args.seconds, token)
                    cpu_ms = (gateway.cpu_seconds() - before) * 1000 / max(result["requests"], 1)
                    runs.setdefault((path, label), []).append((result["rps"], cpu_ms))
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"wrk: 2 threads, 32 connections, {args.seconds} s per run, {args.rounds} rounds alternated"
            f"{', Redis' if args.redis else ', no Redis'}; load {load}"
        )
        print(f"{'path':<24} {'revision':<20} {'rps':>7} {'CPU/req':>10} {'ratio':>6}")
        for path in PATHS:
            first = None
            for label in gateways:
                rows = runs[(path, label)]
                rps, cpu_ms = (statistics.median(row[i] for row in rows) for i in range(2))
                first = first or cpu_ms
                print(f"{path:<24} {label:<20} {rps:>7.0f} {cpu_ms:>7.3f} ms {cpu_ms / first:>6.2f}")
    finally:
        for gateway in gateways.values():
            gateway.stop()
        stack.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
