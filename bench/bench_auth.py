"""Auth: logins per second, the event loop under a login storm, token verifications per second.

0. Logins/s through the gateway against the hash-bound limit measured in the same run. The limit is
   os.cpu_count() / the time of one argon2id verification at the production parameters (m=19 MiB,
   t=2, p=1; the median of 15, in a process of its own, timed before and after the logins). Logins
   go through a stack of gateway + auth (the gateway's rate limits and auth's login throttle raised
   out of the way) from wrk (one thread, closed loop, one connection per concurrent login, so the
   load generator costs little of the machine), at 1, 2, 4, 8 and 16 concurrent logins; with each
   rate its ratio to the limit, and the CPU milliseconds per login of auth and of the gateway (from
   /proc: robust on a shared machine, where wall rates are not), and auth's resident memory after each
   step and once idle (two trim periods later). ``--baseline TREE`` runs a second
   stack whose auth comes from another checkout (e.g. ``git archive`` of the commit before), and
   alternates the two at each concurrency: before/after in the same run.
1. Logins/s: the auth service as a real process (production argon2id parameters: m=19 MiB, t=2,
   p=1; HASH_CONCURRENCY threads), closed loop at 1, 2, 4 and 8 concurrent logins.
2. /live and /api/v1/auth/me while 50 logins run at once: p50/p99 of each (sequential probes) with
   50 logins kept in flight, against each alone (our bar for /live: p99 under 50 ms), and the probes
   not answered 200. /live shows the event loop; /me reads the account and its session, so it shows
   whether the logins leave the database's connections to the other requests.
3. Unknown email versus wrong password: median latency of each (200 samples each).
4. Verifications/s with shared/tokens.py (in process): signature and claims only, and the full
   check with the revocation look-ups (in-process store).

Usage: python bench/bench_auth.py [seconds per step] [--baseline TREE] [--gateway-only]
       (about 3 minutes in all with the default 5; needs wrk: apt-get install wrk)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
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
sys.path[:0] = [str(ROOT), str(ROOT / "services" / "auth")]

from tests.support.users import PASSWORD, new_email, register, register_and_login, register_and_login_sync  # noqa: E402
from tools.bench_results import Results  # noqa: E402
from tools.stack import SERVICES, ServiceProcess, Stack, free_port  # noqa: E402

HERE = Path(__file__).resolve().parent
STEP = 5.0
GATEWAY_CONCURRENCY = (1, 2, 4, 8, 16)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def logins_for(client: httpx.AsyncClient, email: str, concurrency: int, seconds: float) -> tuple[int, int]:
    done = errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, errors
        while time.perf_counter() < stop:
            resp = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
            if resp.status_code == 200:
                done += 1
            else:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, errors


def probe_main(url: str, seconds: float, path: str = "/live", token: str = "") -> None:
    """A sequential prober of ``path`` (with the bearer ``token``, if any), in a process of its own
    so the load generator's event loop cannot delay it: prints the times of the answered probes
    and the count of the others (any status but 200: a 503 when the service could not serve it)."""
    samples, failed = [], 0
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, timeout=10, headers=headers) as client:
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            resp = client.get(path)
            if resp.status_code == 200:
                samples.append((time.perf_counter() - t0) * 1000)
            else:
                failed += 1
            time.sleep(0.01)
    print(json.dumps({"ms": samples, "failed": failed}))


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---- 0. the hash-bound limit, and logins/s through the gateway ----------------------------------
def hash_times_main(samples: int) -> None:
    """In a process of its own: the seconds of ``samples`` argon2id verifications at the production
    parameters (what a login costs), one at a time."""
    from argon2 import PasswordHasher, Type

    from ultrai_auth.settings import OWASP_MEMORY_KIB, OWASP_PARALLELISM, OWASP_TIME_COST

    hasher = PasswordHasher(
        time_cost=OWASP_TIME_COST,
        memory_cost=OWASP_MEMORY_KIB,
        parallelism=OWASP_PARALLELISM,
        hash_len=32,
        salt_len=16,
        type=Type.ID,
    )
    stored = hasher.hash(PASSWORD)
    hasher.verify(stored, PASSWORD)  # warm
    times, cpu = [], []
    for _ in range(samples):
        t0, c0 = time.perf_counter(), time.process_time()
        hasher.verify(stored, PASSWORD)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(json.dumps({"wall": times, "cpu": cpu}))


def hash_times(samples: int = 15) -> dict[str, list[float]]:
    """The wall and CPU seconds of ``samples`` verifications, in a new process."""
    out = subprocess.run(
        [sys.executable, __file__, "--hash-times", str(samples)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def wrk_logins(url: str, concurrency: int, seconds: float, body: str) -> dict:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "--latency",
            "-s",
            str(HERE / "wrk_report.lua"),
            url + "/api/v1/auth/login",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "WRK_BODY": body},
        check=True,
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)


def login_stack(workdir: Path, auth_root: Path) -> Stack:
    stack = Stack(
        workdir,
        {
            "ENVIRONMENT": "development",
            "LOG_LEVEL": "WARNING",
            "RATE_LIMIT_PER_MINUTE": "100000000",
            "RATE_LIMIT_PER_HOUR": "1000000000",
            "LOGIN_RATE_PER_ADDRESS": "100000000/minute",
            "LOGIN_ATTEMPTS_PER_ACCOUNT": "100000000/minute",
        },
        names=("auth", "gateway"),
    )
    stack.specs["auth"] = dataclasses.replace(SERVICES["auth"], root=auth_root)
    return stack


def gateway_bench(results: Results, baseline: Path | None) -> None:
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    trees = [("this tree", ROOT)] + ([("baseline", baseline)] if baseline else [])
    workdir = Path(tempfile.mkdtemp(prefix="bench-auth-gw-"))
    stacks: dict[str, Stack] = {}
    try:
        for label, tree in trees:
            stacks[label] = login_stack(workdir / label.replace(" ", "-"), tree).start_all()
        bodies = {}
        for label, stack in stacks.items():
            with httpx.Client(base_url=stack.url("gateway"), timeout=60) as client:
                email, _ = register_and_login_sync(client, new_email("bench-auth-gw"))
            bodies[label] = json.dumps({"email": email, "password": PASSWORD})
            # Warm up: the pools fill, and the hashing threads settle into the memory they reuse.
            wrk_logins(stack.url("gateway"), 4, 5, bodies[label])

        before = hash_times()
        rates: dict[str, dict[int, float]] = {label: {} for label in stacks}
        rows = []
        for i, concurrency in enumerate(GATEWAY_CONCURRENCY):
            # Alternate which stack goes first, so neither always runs after the other.
            order = list(stacks) if i % 2 == 0 else list(reversed(stacks))
            for label in order:
                stack = stacks[label]
                auth, gateway = stack.procs["auth"], stack.procs["gateway"]
                cpu0 = (auth.cpu_seconds(), gateway.cpu_seconds())
                got = wrk_logins(stack.url("gateway"), concurrency, STEP, bodies[label])
                cpu1 = (auth.cpu_seconds(), gateway.cpu_seconds())
                ok = got["requests"] - got["non2xx"]
                rate = ok / got["seconds"]
                rates[label][concurrency] = rate
                per = max(got["requests"], 1)
                auth_ms, gw_ms = (cpu1[0] - cpu0[0]) * 1000 / per, (cpu1[1] - cpu0[1]) * 1000 / per
                rows.append((label, concurrency, rate, got, auth_ms, gw_ms, auth.rss_mb()))
        after = hash_times()

        t_hash = statistics.median(before["wall"] + after["wall"])
        cpu_hash = statistics.median(before["cpu"] + after["cpu"])
        cores = os.cpu_count() or 1
        bound = cores / t_hash
        print("== logins per second through the gateway against the hash-bound limit (same run)")
        print(
            f"  one argon2id verification (m=19 MiB, t=2, p=1): median {t_hash * 1000:.2f} ms"
            f" (before the logins {statistics.median(before['wall']) * 1000:.2f},"
            f" after {statistics.median(after['wall']) * 1000:.2f}); CPU {cpu_hash * 1000:.2f} ms"
        )
        print(f"  hash-bound limit: {cores} cores / {t_hash * 1000:.2f} ms = {bound:.1f} logins/s   ({load()})")
        print(
            "  (CPU share: one hash's CPU over the CPU a login costs auth and the gateway, the ratio to the"
            " limit a machine of our own would reach; wall rates here share the cores with whatever else runs)"
        )
        results.add("one hash ms", t_hash * 1000, "ms", better="lower")
        results.add("one hash cpu ms", cpu_hash * 1000, "ms", better="lower")
        results.add("hash-bound limit", bound, "/s", better="higher")
        print(
            f"  {'auth from':<10} {'conc':>4} {'logins/s':>9} {'of limit':>9} {'p50 ms':>8} {'p99 ms':>8}"
            f" {'auth cpu/login':>15} {'gw cpu/login':>13} {'CPU share':>10} {'auth RSS':>9} {'errors':>7}"
        )
        for label, concurrency, rate, got, auth_ms, gw_ms, rss in rows:
            share = cpu_hash * 1000 / (auth_ms + gw_ms)
            print(
                f"  {label:<10} {concurrency:>4} {rate:9.1f} {rate / bound:9.2f} {got['p50_ms']:8.1f}"
                f" {got['p99_ms']:8.1f} {auth_ms:12.2f} ms {gw_ms:10.2f} ms {share:10.2f} {rss:6.0f} MB"
                f" {got['errors']:>7}"
            )
            prefix = "gateway" if label == "this tree" else "baseline gateway"
            results.add(f"{prefix} concurrency {concurrency} logins/s", rate, "/s", better="higher")
            results.add(f"{prefix} concurrency {concurrency} x of limit", rate / bound, "x", better="higher")
            results.add(f"{prefix} concurrency {concurrency} auth cpu ms/login", auth_ms, "ms", better="lower")
            results.add(f"{prefix} concurrency {concurrency} gateway cpu ms/login", gw_ms, "ms", better="lower")
            results.add(f"{prefix} concurrency {concurrency} cpu share", share, "x", better="higher")
            results.add(f"{prefix} concurrency {concurrency} auth rss", rss, "MB", better="lower")
            results.add(f"{prefix} concurrency {concurrency} errors", got["errors"], "", better="lower")
        for label in stacks:
            best = max(rates[label].values())
            print(f"  {label}: best {best:.1f} logins/s = {best / bound:.2f} of the hash-bound limit")
            prefix = "gateway" if label == "this tree" else "baseline gateway"
            results.add(f"{prefix} best x of limit", best / bound, "x", better="higher")
        if baseline:
            ratios = [rates["this tree"][c] / rates["baseline"][c] for c in GATEWAY_CONCURRENCY]
            print(f"  this tree / baseline, logins/s: median x{statistics.median(ratios):.2f} over the concurrencies")
        # Memory kept for the next hashes goes back at the periodic trim (MEMORY_TRIM_SECONDS, 30 s): wait two.
        time.sleep(61)
        for label, stack in stacks.items():
            rss = stack.procs["auth"].rss_mb()
            print(f"  {label}: auth RSS {rss:.0f} MB idle, 61 s after the logins")
            prefix = "gateway" if label == "this tree" else "baseline gateway"
            results.add(f"{prefix} auth rss idle after", rss, "MB", better="lower")
    finally:
        for stack in stacks.values():
            stack.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


async def probe(url: str, seconds: float, path: str = "/live", token: str = "") -> tuple[list[float], int]:
    """(times of the answered probes in ms, count of the failed ones): see ``probe_main``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--probe", url, str(seconds), path, token, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    answer = json.loads(out)
    return answer["ms"], answer["failed"]


async def service_bench(url: str, results: Results) -> None:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with (
        httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client,
    ):
        email = await register(client, new_email("bench-auth"))
        await logins_for(client, email, 2, 1.0)  # warm up

        print("== logins per second (production argon2id, m=19 MiB t=2 p=1)")
        base = None
        for concurrency in (1, 2, 4, 8):
            done, errors = await logins_for(client, email, concurrency, STEP)
            rate = done / STEP
            base = base or rate
            print(f"  concurrency {concurrency:>2}: {rate:6.1f} logins/s  (x{rate / base:.2f} of 1)  errors {errors}")
            results.add(f"concurrency {concurrency} logins/s", rate, "/s", better="higher")
            if concurrency > 1:
                results.add(f"concurrency {concurrency} x of 1", rate / base, "x", better="higher")
            results.add(f"concurrency {concurrency} errors", errors, "", better="lower")

        # /live shows the event loop; /api/v1/auth/me, which reads the account and its session,
        # shows whether the logins leave the database's connections to the other requests.
        _, tokens = await register_and_login(client, new_email("bench-auth-probe"))
        for name, path, token in (("/live", "/live", ""), ("/me", "/api/v1/auth/me", tokens["access_token"])):
            print(f"== {name} while 50 logins run at once (3 rounds)")
            idle, _ = await probe(url, 3.0, path, token)
            idle_p50, idle_p99 = statistics.median(idle), pct(idle, 0.99)
            print(f"  idle:     p50 {idle_p50:6.2f} ms  p99 {idle_p99:6.2f} ms  ({len(idle)} probes)")
            results.add(f"{name} idle p50", idle_p50, "ms", better="lower")
            results.add(f"{name} idle p99", idle_p99, "ms", better="lower")
            p50s, p99s, failures = [], [], 0
            for round_ in range(3):
                storm_task = asyncio.create_task(logins_for(client, email, 50, STEP + 1.5))
                await asyncio.sleep(1.0)
                loaded, failed = await probe(url, STEP, path, token)
                done, errors = await storm_task
                failures += failed
                p50s.append(statistics.median(loaded) if loaded else float("nan"))
                p99s.append(pct(loaded, 0.99) if loaded else float("nan"))
                print(
                    f"  storm {round_ + 1}:  p50 {p50s[-1]:6.2f} ms  p99 {p99s[-1]:6.2f} ms"
                    f"  ({len(loaded)} probes, {failed} failed; {done / (STEP + 1.5):.1f} logins/s, {errors} refused)"
                )
                results.add(f"{name} storm {round_ + 1} refused logins", errors, "", better="lower")
            mid = statistics.median(p99s)
            print(f"  median p99 under the storm {mid:.2f} ms (x{mid / idle_p99:.1f} idle), {failures} failed")
            results.add(f"{name} median p50 under the storm", statistics.median(p50s), "ms", better="lower")
            results.add(f"{name} median p99 under the storm", mid, "ms", better="lower")
            results.add(f"{name} median p99 under the storm / idle", mid / idle_p99, "x", better="lower")
            results.add(f"{name} failed under the storm", failures, "", better="lower")

        print("== unknown email vs wrong password (200 logins each, interleaved, one at a time)")
        unknown, wrong = [], []
        for i in range(200):
            for bucket, address in ((unknown, f"nobody-{i}@example.com"), (wrong, email)):
                t0 = time.perf_counter()
                resp = await client.post("/api/v1/auth/login", json={"email": address, "password": "not it at all"})
                bucket.append((time.perf_counter() - t0) * 1000)
                assert resp.status_code == 401, resp.status_code
        mu, mw = statistics.median(unknown), statistics.median(wrong)
        print(f"  median unknown {mu:.1f} ms, wrong password {mw:.1f} ms, ratio x{mu / mw:.3f}")
        results.add("median unknown", mu, "ms", better="lower")
        results.add("median wrong password", mw, "ms", better="lower")
        # Near 1 is right (no answer tells an unknown email from a wrong password); the drift that
        # leaks is an unknown email answered faster (no real hash): below 1, hence "higher".
        results.add("unknown / wrong password ratio", mu / mw, "x", better="higher")


async def verify_bench(results: Results) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from shared.settings import ServiceSettings
    from shared.tokens import TokenVerifier
    from ultrai_auth.keys import Signer
    from ultrai_auth.settings import AuthSettings

    signer = Signer(AuthSettings(environment="test", data_dir=Path(tempfile.mkdtemp())), Ed25519PrivateKey.generate())

    async def jwks() -> dict:
        return signer.jwks()

    verifier = TokenVerifier(ServiceSettings(environment="test"), "documents", jwks_source=jwks)
    tokens = [signer.access_token(f"user-{i}", f"session-{i}")[0] for i in range(100)]
    print("== token verifications per second (shared/tokens.py, one process, one core)")
    for label, fn in (("signature + claims", verifier.verify_signature), ("full (with revocation)", verifier.verify)):
        n = 0
        stop = time.perf_counter() + 3.0
        t0 = time.perf_counter()
        while time.perf_counter() < stop:
            for token in tokens:
                await fn(token)
            n += len(tokens)
        rate = n / (time.perf_counter() - t0)
        print(f"  {label:<24} {rate:8.0f} verifications/s  ({1e6 / rate:.0f} µs each)")
        results.add(f"{label} verifications/s", rate, "/s", better="higher")
    await verifier.aclose()


def main() -> None:
    global STEP
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("seconds", nargs="?", type=float, default=STEP, help="seconds per step")
    parser.add_argument("--baseline", type=Path, help="another checkout whose auth runs beside this one's")
    parser.add_argument("--gateway-only", action="store_true", help="only the logins through the gateway")
    args = parser.parse_args()
    STEP = args.seconds
    results = Results("auth")
    print(load())
    gateway_bench(results, args.baseline)
    if args.gateway_only:
        results.save()
        return
    workdir = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    proc = ServiceProcess(
        SERVICES["auth"],
        free_port(),
        env={
            "ENVIRONMENT": "development",
            "DATA_DIR": str(workdir / "data"),
            "LOG_LEVEL": "WARNING",
            "LOGIN_RATE_PER_ADDRESS": "1000000/minute",
            "LOGIN_ATTEMPTS_PER_ACCOUNT": "1000000/minute",
            **{k: v for k, v in os.environ.items() if k.startswith(("HASH_", "ARGON2_"))},
        },
        log_path=workdir / "auth.log",
    ).start()
    try:
        proc.wait_ready(timeout=60)
        asyncio.run(service_bench(proc.url, results))
        asyncio.run(verify_bench(results))
        results.save()
    finally:
        proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:
        probe_main(sys.argv[2], float(sys.argv[3]), *sys.argv[4:6])
    elif sys.argv[1:2] == ["--hash-times"]:
        hash_times_main(int(sys.argv[2]))
    else:
        main()
