"""How fast the services answer when something behind them fails: the figures the fault tests leave
out (they check what happens, not how long it takes).

1. A dead upstream: the gateway's 503 for a prefix whose service is not listening (median and
   worst of 50), next to the same gateway's answer from a live upstream (its /live).
2. PostgreSQL 3 s late (a fault proxy between auth and the database): how long auth's /ready takes
   to say 503; and, after the link is cut and restored, how long until /ready is 200 again.
   Only with BENCH_DATABASE_URL (an admin URL; a scratch database is created and dropped).

Usage: python bench/bench_faults.py
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faults.proxy import FaultProxy  # noqa: E402
from tools.bench_results import Results  # noqa: E402
from tools.stack import SERVICES, ServiceProcess, free_port, service_env  # noqa: E402


def timed(fn) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    resp = fn()
    return (time.perf_counter() - started) * 1000, resp


def dead_upstream(tmp: Path, results: Results) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gateway = ServiceProcess(
        SERVICES["gateway"],
        free_port(),
        env={"AUTH_URL": dead, "DOCUMENTS_URL": dead, "LLM_URL": dead, "LOG_LEVEL": "WARNING", "DATA_DIR": str(tmp)},
        log_path=tmp / "gateway.log",
    ).start()
    try:
        gateway.wait_ready()
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            live, down = [], []
            for _ in range(50):
                ms, resp = timed(lambda: client.get("/live"))
                live.append(ms)
                ms, resp = timed(lambda: client.post("/api/v1/auth/login", json={"email": "a@b.c", "password": "x"}))
                assert resp.status_code == 503, resp.status_code
                down.append(ms)
        print("1. a dead upstream (50 requests each)")
        print(f"   gateway /live                 median {statistics.median(live):6.1f} ms  worst {max(live):6.1f} ms")
        print(f"   503 for the dead auth prefix  median {statistics.median(down):6.1f} ms  worst {max(down):6.1f} ms")
        results.add("gateway /live median", statistics.median(live), "ms", better="lower")
        results.add("gateway /live worst", max(live), "ms", better="lower")
        results.add("503 for the dead auth prefix median", statistics.median(down), "ms", better="lower")
        results.add("503 for the dead auth prefix worst", max(down), "ms", better="lower")
    finally:
        gateway.stop()


def wait_status(url: str, status: int, timeout: float = 30.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if httpx.get(url, timeout=10).status_code == status:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} never answered {status}")


def slow_database(tmp: Path, admin: str, results: Results) -> None:
    import asyncpg

    name = f"ultrai_bench_faults_{secrets.token_hex(3)}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    db_url = admin.rsplit("/", 1)[0] + "/" + name
    parts = urlsplit(db_url)
    proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    env = {
        "DATABASE_URL": proxy.url_for(db_url),
        "DATA_DIR": str(tmp),
        "DB_POOL_TIMEOUT": "2",
        "DB_STATEMENT_TIMEOUT_MS": "3000",
        "LOG_LEVEL": "WARNING",
    }
    spec = SERVICES["auth"]
    migrate = [sys.executable, "-m", "ultrai_auth.migrate"]
    subprocess.run(migrate, cwd=spec.app_dir, env=service_env(spec, env), check=True, capture_output=True)
    auth = ServiceProcess(spec, free_port(), env=env, log_path=tmp / "auth.log").start()
    try:
        auth.wait_ready("/ready", timeout=60)
        print("2. PostgreSQL behind a fault proxy (auth's /ready; check bound 2 s)")
        proxy.set("latency", latency=3.0)
        answers = []
        for _ in range(5):
            ms, resp = timed(lambda: httpx.get(auth.url + "/ready", timeout=15))
            assert resp.status_code == 503, resp.status_code
            answers.append(ms)
        print(f"   3 s of latency: 503 in median {statistics.median(answers):6.0f} ms  worst {max(answers):6.0f} ms")
        results.add("3 s of latency: 503 in median", statistics.median(answers), "ms", better="lower")
        results.add("3 s of latency: 503 in worst", max(answers), "ms", better="lower")
        proxy.set("pass")
        wait_status(auth.url + "/ready", 200)
        for fault in ("down", "reset"):
            proxy.set(fault)
            wait_status(auth.url + "/ready", 503)
            proxy.set("pass")
            back = wait_status(auth.url + "/ready", 200)
            print(f"   {fault:<5}: /ready 200 again {back:5.2f} s after the link came back")
            results.add(f"{fault}: /ready 200 again", back, "s", better="lower")
    finally:
        auth.stop()
        proxy.close()
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> None:
    results = Results("faults")
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        dead_upstream(Path(tmp), results)
        admin = os.environ.get("BENCH_DATABASE_URL")
        if admin:
            slow_database(Path(tmp), admin, results)
        else:
            print("2. skipped: set BENCH_DATABASE_URL (a PostgreSQL admin URL) for the database figures")
    results.save()


if __name__ == "__main__":
    main()
