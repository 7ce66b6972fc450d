"""The gateway under its production server (uvicorn, httptools + uvloop, the edge protocol) beside
the same app under granian, in front of the same services, in the same run.

Each server's gateway gets the same wrk runs (closed loop, 2 threads, 32 connections), alternated
round by round, on the public JWKS (a route that costs its service nothing) and on
/api/v1/auth/me (the edge token check, then auth); printed: requests per second and the
gateway's CPU time per request (user + system of its processes, children included, over the
requests wrk counted), medians over the rounds. granian is not a dependency: without it
installed (``pip install granian``), only uvicorn is measured. Under granian the gateway has none
of the edge protocol's limits (``ultrai_gateway.server``): the figures compare the servers' cost,
not two ways to deploy.

Usage: python bench/bench_gateway_servers.py [seconds per wrk run] [rounds]   (needs wrk)
"""

from __future__ import annotations

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

from bench.bench_gateway import STACK_ENV, wrk  # noqa: E402
from tests.support.users import new_email, register_and_login_sync  # noqa: E402
from tools.bench_results import Results  # noqa: E402
from tools.stack import SERVICES, ServiceProcess, Stack, free_port, service_command, service_env  # noqa: E402

PATHS = ("/.well-known/jwks.json", "/api/v1/auth/me")


def granian_command(port: int) -> list[str] | None:
    granian = shutil.which("granian", path=str(Path(sys.executable).parent)) or shutil.which("granian")
    if granian is None:
        return None
    return [
        granian,
        *("--interface", "asgi", "--loop", "uvloop", "--http", "1", "--workers", "1"),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
        SERVICES["gateway"].module,
    ]


def start(stack: Stack, label: str, command: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = int(command[command.index("--port") + 1])
    log = (stack.workdir / f"{label}.log").open("ab")
    proc = subprocess.Popen(
        command,
        env=service_env(SERVICES["gateway"], stack.env),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{label} exited: {(stack.workdir / f'{label}.log').read_text()[-2000:]}")
        try:
            if httpx.get(url + "/live", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    sys.exit(f"{label} did not start")


def cpu_seconds(proc: subprocess.Popen[bytes]) -> float:
    process = ServiceProcess(SERVICES["gateway"], 0)
    process.proc = proc
    return process.cpu_seconds()


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="ultrai-bench-"))
    stack = Stack(
        workdir,
        STACK_ENV,
        names=("auth", "documents", "llm"),
    )
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        stack.start_all()
        port = free_port()
        servers["uvicorn"] = start(stack, "uvicorn", service_command(SERVICES["gateway"], port))
        command = granian_command(free_port())
        if command is None:
            print("granian is not installed (pip install granian): uvicorn alone is measured")
        else:
            servers["granian"] = start(stack, "granian", command)
        with httpx.Client(base_url=servers["uvicorn"][1], timeout=30) as client:
            _, tokens = register_and_login_sync(client, new_email("bench"))
        token = tokens["access_token"]
        runs: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for _ in range(rounds):
            for path in PATHS:
                for name, (proc, url) in servers.items():
                    wrk(url + path, 1, token)  # warm the connections and the caches
                    before = cpu_seconds(proc)
                    result = wrk(url + path, seconds, token)
                    cpu_ms = (cpu_seconds(proc) - before) * 1000 / max(result["requests"], 1)
                    runs.setdefault((path, name), []).append((result["rps"], cpu_ms, result["p50_ms"]))
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"wrk: 2 threads, 32 connections, {seconds} s per run, {rounds} rounds alternated; load {load}")
        print(f"{'path':<24} {'server':<8} {'rps':>7} {'CPU/req':>10} {'p50':>8}")
        results = Results("gateway_servers")
        for (path, name), rows in runs.items():
            rps, cpu_ms, p50 = (statistics.median(row[i] for row in rows) for i in range(3))
            print(f"{path:<24} {name:<8} {rps:>7.0f} {cpu_ms:>7.3f} ms {p50:>5.1f} ms")
            results.add(f"{path} {name} rps", rps, "req/s", better="higher")
            results.add(f"{path} {name} CPU per request", cpu_ms, "ms", better="lower")
        results.save()
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        stack.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
