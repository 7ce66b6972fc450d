"""API keys: what resolving a key costs a service per request, and how fast a revocation reaches it.

Auth runs as a real process; the service side is ``shared.tokens.TokenVerifier.verify_key`` in this
process (what every service and the gateway run for ``Authorization: Bearer uai_…``).

1. Warm: the grant cached (API_KEY_CACHE_SECONDS), revocation checked locally (and in Redis when
   REDIS_URL is set). Goal: p50 under 0.5 ms.
2. Cold: no cache (API_KEY_CACHE_SECONDS=0), every request asks auth. Goal: p50 under 5 ms. Printed
   with it: a bare round trip to auth (GET /live), the part no change to resolution can remove.
   The rest is auth's handler: one indexed read (a resolution writes the key's last use only when
   the recorded one is a minute old).
3. Revocation propagation: from auth's answer to DELETE /api/v1/auth/keys/{id} until the verifier
   refuses the key (warm cache; without Redis through auth's revocation list, polled every
   REVOCATION_POLL_SECONDS; with Redis at the next request).

Usage: python bench/bench_api_keys.py [samples]   (REDIS_URL=redis://... for the shared store)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from starlette.requests import Request  # noqa: E402

from shared.errors import ProblemError  # noqa: E402
from shared.settings import ServiceSettings  # noqa: E402
from shared.tokens import TokenVerifier  # noqa: E402
from tests.support.users import bearer, login, new_email, register  # noqa: E402
from tools.bench_results import Results  # noqa: E402
from tools.stack import SERVICES, ServiceProcess, free_port  # noqa: E402

SAMPLES = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
REDIS = os.environ.get("REDIS_URL")
PREFIX = f"bench-keys-{os.getpid()}"


def request_for(path: str = "/v1/models") -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8003),
        "scheme": "http",
    }
    return Request(scope)


def settings(auth_url: str, cache: float) -> ServiceSettings:
    extra = {"redis_url": REDIS, "redis_key_prefix": PREFIX} if REDIS else {}
    return ServiceSettings(auth_url=auth_url, api_key_cache_seconds=cache, **extra)  # type: ignore[arg-type]


def report(label: str, samples: list[float], results: Results) -> None:
    ordered = sorted(samples)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    print(f"  {label:<34} p50 {p(0.5):7.3f} ms   p99 {p(0.99):7.3f} ms   ({len(samples)} samples)")
    results.add(f"{label.strip()} p50", p(0.5), "ms", better="lower")
    results.add(f"{label.strip()} p99", p(0.99), "ms", better="lower")


async def timed(verifier: TokenVerifier, key: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await verifier.verify_key(key, request_for())
        out.append(time.perf_counter() - t0)
    return out


async def bench(auth_url: str, results: Results) -> None:
    async with httpx.AsyncClient(base_url=auth_url, timeout=30) as client:
        email = new_email("bench-keys")
        await register(client, email)
        token = (await login(client, email))["access_token"]

        async def make() -> dict:
            resp = await client.post("/api/v1/auth/keys", json={"name": "bench"}, headers=bearer(token))
            resp.raise_for_status()
            return dict(resp.json())

        made = await make()
        print(f"API key resolution at a service ({'Redis' if REDIS else 'in-process store, auth list polled'}):")
        warm = TokenVerifier(settings(auth_url, 5.0), "llm")
        cold = TokenVerifier(settings(auth_url, 0.0), "llm")
        try:
            await warm.verify_key(made["key"], request_for())
            report("warm (grant cached)", await timed(warm, made["key"], SAMPLES), results)
            report("cold (auth asked every time)", await timed(cold, made["key"], max(200, SAMPLES // 10)), results)
            # The floor of a cold resolution: one HTTP round trip to auth doing nothing.
            floor = []
            for _ in range(max(200, SAMPLES // 10)):
                t0 = time.perf_counter()
                (await client.get("/live")).raise_for_status()
                floor.append(time.perf_counter() - t0)
            report("  of which: a round trip to auth", floor, results)

            delays = []
            for _ in range(10):
                made = await make()
                await warm.verify_key(made["key"], request_for())
                resp = await client.delete(f"/api/v1/auth/keys/{made['id']}", headers=bearer(token))
                resp.raise_for_status()
                t0 = time.perf_counter()
                while True:
                    try:
                        await warm.verify_key(made["key"], request_for())
                    except ProblemError as exc:
                        if exc.status == 401:
                            break
                    await asyncio.sleep(0.005)
                delays.append(time.perf_counter() - t0)
            print(
                f"  {'revocation propagation':<34} median {statistics.median(delays) * 1000:7.1f} ms   "
                f"max {max(delays) * 1000:7.1f} ms   (10 keys)"
            )
            results.add("revocation propagation median", statistics.median(delays) * 1000, "ms", better="lower")
            results.add("revocation propagation max", max(delays) * 1000, "ms", better="lower")
        finally:
            await warm.aclose()
            await cold.aclose()


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-keys-"))
    env = {"ENVIRONMENT": "test", "DATA_DIR": str(workdir / "data"), "LOG_LEVEL": "WARNING"}
    if REDIS:
        env.update(REDIS_URL=REDIS, REDIS_KEY_PREFIX=PREFIX)
    proc = ServiceProcess(SERVICES["auth"], free_port(), env=env, log_path=workdir / "auth.log").start()
    try:
        proc.wait_ready(timeout=60)
        # With Redis a revocation reaches the service at its next request, without it at auth's next
        # poll: two setups, each compared with its own runs.
        results = Results("api_keys_redis" if REDIS else "api_keys")
        asyncio.run(bench(proc.url, results))
        results.save()
    finally:
        proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
