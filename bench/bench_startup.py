"""Start-up time and resident memory of each service, started as `make dev` and the tests start it.

Start-up: from process launch to the first 200 on /live (median of RUNS starts).
Memory: resident set size a second after start, with no traffic.
Usage: python bench/bench_startup.py [RUNS]

With ``--production``: resident memory per worker after warm-up, each service started as it
deploys. The four services run together with render.yaml's ``startCommand`` and environment
(``WEB_CONCURRENCY`` workers each, ``ENVIRONMENT=production``; tools/deploy_check.py's
placeholders: a scratch PostgreSQL database migrated by each ``preDeployCommand``, the local Redis).
Each service runs in a virtual environment of its own made by its ``buildCommand``, as on Render
(kept under .deploy-check/bench-venvs and remade when a requirements file changes): what a library
imports depends on what else is installed (FastAPI loads OpenTelemetry when it is there, httpx its
command line's rich and pygments), so the repository's development environment would measure
10 to 15 MB more per worker. ``--repo-venv`` uses it all the same (quicker, not what deploys). Each
worker's RSS is read at rest and again after the warm-up: ROUNDS rounds (four at once, each on new
connections, so every worker gets traffic) of the main routes through the gateway: register, log
in, the account, refresh, JWKS, API keys, upload a document, list it, read it, its text and chunks,
the models, conversations and usage, log out. Printed against the bars of issue 17: 80 MB per
worker, 220 MB for llm. Each worker's PSS is printed beside: its pages shared with other
processes (the libraries, which the workers of one service share) counted in part.
Usage: python bench/bench_startup.py --production [--rounds ROUNDS] [--root TREE] [--repo-venv] [--breakdown]
(``--root``: measure the services of another checkout of this repository, for an A/B run;
``--breakdown``: print where each worker's resident memory is, by mapping: each library, the heap.)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.bench_results import Results
from tools.stack import ROOT, SERVICES, ServiceProcess, free_port

# Resident MB per worker after warm-up in the production start (issue 17).
WARM_BAR = {"llm": 220.0}
WARM_BAR_DEFAULT = 80.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="?", type=int, default=3, help="starts per service (default 3)")
    parser.add_argument("--production", action="store_true", help="RSS per worker after warm-up, production start")
    parser.add_argument("--rounds", type=int, default=24, help="warm-up rounds (--production)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose services run (--production)")
    parser.add_argument("--repo-venv", action="store_true", help="run in this environment, not one per service")
    parser.add_argument("--breakdown", action="store_true", help="each worker's largest mappings (--production)")
    args = parser.parse_args()
    if args.production:
        production(args.root.resolve(), args.rounds, repo_venv=args.repo_venv, breakdown=args.breakdown)
        return
    runs = args.runs
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("gateway", "auth", "documents", "llm"):
            times, rss = [], []
            for i in range(runs):
                proc = ServiceProcess(
                    SERVICES[name],
                    free_port(),
                    env={"DATA_DIR": f"{tmp}/{name}-{i}", "LOG_LEVEL": "WARNING"},
                    log_path=Path(tmp) / f"{name}.log",
                ).start()
                try:
                    times.append(proc.wait_ready("/live", timeout=90))
                    time.sleep(1.0)
                    rss.append(proc.rss_mb())
                finally:
                    proc.stop()
            rows.append((name, statistics.median(times), min(times), statistics.median(rss)))
    print(f"{'service':<10} {'start-up p50 (s)':>17} {'best (s)':>9} {'RSS p50 (MB)':>13}")
    results = Results("startup")
    for name, med, best, rss in rows:
        print(f"{name:<10} {med:>17.2f} {best:>9.2f} {rss:>13.1f}")
        results.add(f"{name} start-up p50", med, "s", better="lower")
        results.add(f"{name} RSS p50", rss, "MB", better="lower")
    print(f"({runs} starts each; SQLite and in-process cache; time to first 200 on /live)")
    results.save()


# ------------------------------------------------------------------------ --production


def worker_processes(pid: int) -> list:
    """The processes that serve requests in a service's process tree: uvicorn's spawned workers, or
    with one worker uvicorn itself (not the shell, the supervisor or multiprocessing's helpers)."""
    import psutil

    root = psutil.Process(pid)
    tree = [root, *root.children(recursive=True)]
    spawned = []
    for p in tree:
        try:
            cmdline = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in cmdline and "resource_tracker" not in cmdline:
            spawned.append(p)
    if spawned:
        return spawned
    for p in tree:
        try:
            if "uvicorn" in " ".join(p.cmdline()):
                return [p]
        except psutil.Error:
            continue
    return [root]


def rss_per_worker(pid: int, kind: str = "rss") -> list[float]:
    """Each worker's resident memory in MB, smallest first; ``kind="pss"``: its proportional share
    (pages shared with other processes, such as the other workers' libraries, counted in part)."""
    import psutil

    sizes = []
    for p in worker_processes(pid):
        try:
            info = p.memory_full_info() if kind == "pss" else p.memory_info()
            sizes.append(getattr(info, kind) / 1e6)
        except psutil.Error:
            continue
    return sorted(sizes)


def mappings(pid: int, top: int = 8) -> str:
    """Where a worker's resident memory is: its mappings' RSS summed by what they map (each
    shared library, the heap and other anonymous memory), the largest ``top``, in MB."""
    sizes: dict[str, int] = {}
    name = "?"
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split()
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    path = head[5] if len(head) > 5 else "[anonymous]"
                    name = path.rsplit("/", 1)[-1] if path.startswith("/") else path
                elif head[0] == "Rss:":
                    sizes[name] = sizes.get(name, 0) + int(head[1])
    except OSError:
        return "(gone)"
    biggest = sorted(sizes.items(), key=lambda kv: -kv[1])[:top]
    return ", ".join(f"{n} {kb / 1024:.1f}" for n, kb in biggest)


def warm_up_round(gateway: str) -> dict[str, int]:
    """The main routes of every service once, through the gateway, on new connections, as a client
    of an address of its own (per-address limits); returns the count of answers per status class (a
    warm-up that failed must not pass for one)."""
    import random

    import httpx

    from tests.support.users import bearer, new_email, register_and_login_sync

    statuses: dict[str, int] = {}

    def seen(resp: httpx.Response) -> httpx.Response:
        key = f"{resp.status_code // 100}xx"
        statuses[key] = statuses.get(key, 0) + 1
        return resp

    # An address of the benchmarking range (198.18.0.0/15), as Render's edge would append it.
    address = f"198.18.{random.randrange(256)}.{random.randrange(1, 255)}"
    with httpx.Client(base_url=gateway, timeout=60, headers={"X-Forwarded-For": address}) as client:
        seen(client.get("/ready"))
        _, tokens = register_and_login_sync(client, new_email("warm"))
        statuses["2xx"] = statuses.get("2xx", 0) + 2
        auth = bearer(tokens["access_token"])
        seen(client.get("/api/v1/auth/me", headers=auth))
        refreshed = seen(client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}))
        if refreshed.status_code == 200:
            auth = bearer(refreshed.json()["access_token"])
        seen(client.get("/.well-known/jwks.json"))
        seen(client.post("/api/v1/auth/keys", headers=auth, json={"name": "warm"}))
        seen(client.get("/api/v1/auth/keys", headers=auth))
        doc = seen(
            client.post(
                "/api/v1/documents",
                headers=auth,
                files={"file": ("notes.md", b"# Notes\n\n" + b"Some text to read. " * 400, "text/markdown")},
            )
        )
        seen(client.get("/api/v1/documents", headers=auth))
        if doc.status_code == 201:
            doc_id = doc.json()["id"]
            for tail in ("", "/text", "/chunks"):
                seen(client.get(f"/api/v1/documents/{doc_id}{tail}", headers=auth))
        seen(client.get("/api/v1/llm/models", headers=auth))
        seen(client.get("/v1/models", headers=auth))
        seen(client.post("/api/v1/llm/conversations", headers=auth, json={"title": "warm"}))
        seen(client.get("/api/v1/llm/conversations", headers=auth))
        seen(client.get("/api/v1/llm/usage", headers=auth))
        seen(client.post("/api/v1/auth/logout", headers=auth, json={"refresh_token": tokens["refresh_token"]}))
    return statuses


def service_venv(name: str, entry: dict, root: Path) -> Path:
    """A virtual environment with what ``entry``'s buildCommand installs, made once and remade
    when a requirements file it reads changes."""
    import hashlib

    from tools import deploy_check as dc

    venv = ROOT / ".deploy-check" / "bench-venvs" / name
    inputs = [root / "services" / name / "requirements.txt", *sorted((root / "shared").glob("requirements*.txt"))]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in [*inputs, root / "shared" / "pyproject.toml"]))
    stamp = venv / "requirements.sha256"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return venv
    print(f"[{name}] new virtual environment: {entry['buildCommand']}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    build_log = venv / "build.log"
    if dc.run_shell(entry["buildCommand"], root, dc.base_env(venv), build_log, timeout=1800):
        raise SystemExit(f"{name}: buildCommand failed\n{dc.tail(build_log)}")
    stamp.write_text(digest.hexdigest())
    return venv


def production(root: Path, rounds: int, *, repo_venv: bool = False, breakdown: bool = False) -> None:
    from tools import deploy_check as dc

    blueprint = dc.load_yaml(root / "render.yaml")
    entries = dc.web_services(blueprint)
    ph = dc.Placeholders(ports={entry["name"]: free_port() for entry in entries.values()})
    admin_url = os.environ.get("TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
    scratch = dc.scratch_postgres(admin_url)
    if scratch:
        ph.database_url = scratch[1]
    redis_url = os.environ.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
    if dc.port_open("127.0.0.1", int(redis_url.rsplit(":", 1)[1].split("/")[0])):
        ph.redis_url = redis_url
    procs: dict[str, subprocess.Popen] = {}
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        try:
            for name, entry in entries.items():
                venv = Path(sys.executable).parent.parent if repo_venv else service_venv(name, entry, root)
                env = {
                    **dc.base_env(venv),
                    # This checkout's shared package, not the one installed in the environment.
                    "PYTHONPATH": str(root),
                    **dc.resolve_env(blueprint, entry, ph),
                    "PORT": str(ph.ports[entry["name"]]),
                    "DATA_DIR": str(logs / "data" / name),
                    "LOG_LEVEL": "WARNING",
                }
                if "TRUSTED_PROXIES" in env:
                    # The gateway reaches auth from loopback here, not from Render's private network.
                    env["TRUSTED_PROXIES"] += ",127.0.0.1/32"
                if entry.get("preDeployCommand"):
                    rc = dc.run_shell(entry["preDeployCommand"], root, env, logs / f"{name}.log", timeout=300)
                    if rc:
                        raise SystemExit(f"{name}: preDeployCommand exited {rc}\n{dc.tail(logs / f'{name}.log')}")
                with open(logs / f"{name}.log", "ab") as out:
                    procs[name] = subprocess.Popen(
                        ["bash", "-c", entry["startCommand"]],
                        cwd=root,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
            for name, entry in entries.items():
                url = f"http://127.0.0.1:{ph.ports[entry['name']]}{entry.get('healthCheckPath') or '/'}"
                if dc.wait_http(url, procs[name], 90) is None:
                    raise SystemExit(f"{name} did not come up\n{dc.tail(logs / f'{name}.log')}")
            for proc in procs.values():
                dc.settle(proc.pid)
            rest = {name: rss_per_worker(proc.pid) for name, proc in procs.items()}
            gateway = f"http://127.0.0.1:{ph.ports[entries['gateway']['name']]}"
            statuses: dict[str, int] = {}
            with ThreadPoolExecutor(4) as pool:
                for counts in pool.map(lambda _: warm_up_round(gateway), range(rounds)):
                    for key, n in counts.items():
                        statuses[key] = statuses.get(key, 0) + n
            for proc in procs.values():
                dc.settle(proc.pid)
            warm = {name: rss_per_worker(proc.pid) for name, proc in procs.items()}
            shares = {name: rss_per_worker(proc.pid, "pss") for name, proc in procs.items()}
            if breakdown:
                for name, proc in procs.items():
                    for worker in worker_processes(proc.pid):
                        print(f"[{name} {worker.pid}] {mappings(worker.pid)}")
        finally:
            for proc in procs.values():
                dc.stop_group(proc)
            if scratch:
                dc.drop_postgres(admin_url, scratch[0])
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{'service':<10} {'workers':>7} {'at rest (MB)':>18} {'after warm-up (MB)':>20} {'bar':>5}  {'result':<8}"
        f" {'PSS after (MB)':>15}"
    )
    results = Results("startup-production")
    for name in entries:
        bar = WARM_BAR.get(name, WARM_BAR_DEFAULT)
        top = max(warm[name])
        both = "/".join(f"{x:.1f}" for x in warm[name])
        at_rest = "/".join(f"{x:.1f}" for x in rest[name])
        verdict = "ok" if top < bar else "over bar"
        pss = "/".join(f"{x:.1f}" for x in shares[name])
        print(f"{name:<10} {len(warm[name]):>7} {at_rest:>18} {both:>20} {bar:>5.0f}  {verdict:<8} {pss:>15}")
        results.add(f"{name} RSS per worker at rest", max(rest[name]), "MB", better="lower")
        results.add(f"{name} RSS per worker after warm-up", top, "MB", better="lower")
        results.add(f"{name} PSS per worker after warm-up", max(shares[name]), "MB", better="lower")
    database = "PostgreSQL" if scratch else "SQLite"
    kv = "Redis" if ph.redis_url else "in-process"
    answers = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
    where = "the repository's environment" if repo_venv else "one environment per service"
    print(f"(render.yaml's startCommand in {where}, {database}, {kv}; {rounds} warm-up rounds, answers {answers})")
    print("(the bars are on RSS; PSS counts the pages a worker shares with others, its libraries mostly, in part)")
    print(f"(load average {load})")
    results.save()


if __name__ == "__main__":
    main()
