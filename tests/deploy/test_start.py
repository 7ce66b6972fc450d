"""The parts of `make deploy-check` that need no install: every service's preDeployCommand and
startCommand, exactly as render.yaml writes them, run by a shell with this environment's packages,
render.yaml's environment (production) and the network guard; each must answer healthCheckPath.
With Redis, the analysis worker too (its startCommand): it must log that it takes jobs and take the
deploy check's probe job from the queue documents enqueues to."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import redis_prefix
from tools import deploy_check as dc
from tools.stack import WORKER_READY, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def request(url: str, data: dict | None = None, headers: dict | None = None) -> tuple[int, Any]:
    body = json.dumps(data).encode() if data is not None else None
    headers = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=body, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited {proc.returncode}:\n{dc.tail(log, 40)}"
        try:
            if request(url)[0] == 200:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready in {timeout} s:\n{dc.tail(log, 40)}")


@pytest.fixture(scope="module")
async def deployed(tmp_path_factory: pytest.TempPathFactory, pg_databases, redis_url) -> Iterator[dict[str, Any]]:
    blueprint = dc.load_yaml(dc.BLUEPRINT)
    web = dc.web_services(blueprint)
    work = tmp_path_factory.mktemp("deploy")
    guard = work / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(dc.GUARD_MODULE)
    ph = dc.Placeholders(ports={entry["name"]: free_port() for entry in web.values()})
    if pg_databases is not None:
        url = await pg_databases.create("deploy")
        ph.database_url = "postgres://" + url.split("://", 1)[1]  # the form Render hands out
    ph.redis_url = redis_url
    base = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", "/tmp"),
        # The guard, then the tree's own sources (as tools/stack.py runs them): an installed copy of
        # shared/ in this environment may be older than the checkout.
        "PYTHONPATH": os.pathsep.join([str(guard), str(dc.ROOT)]),
        "PYTHONUNBUFFERED": "1",
    }
    procs: dict[str, tuple[subprocess.Popen, Path, str]] = {}
    workers: dict[str, tuple[subprocess.Popen, Path, str]] = {}
    prefixes: dict[str, str] = {}
    try:
        for name, entry in web.items():
            port = ph.ports[entry["name"]]
            env = {
                **base,
                **dc.resolve_env(blueprint, entry, ph),
                "PORT": str(port),
                "DATA_DIR": str(work / name),
                "REDIS_KEY_PREFIX": redis_prefix(name),
                "ULTRAI_NETGUARD_LOG": str(work / f"{name}.network.log"),
            }
            prefixes[name] = env["REDIS_KEY_PREFIX"]
            if name == "auth":
                env["LOGIN_RATE_PER_ADDRESS"] = "2/minute"
            log = work / f"{name}.log"
            if "preDeployCommand" in entry:
                with open(log, "ab") as out:
                    rc = subprocess.run(
                        ["bash", "-c", entry["preDeployCommand"]], cwd=dc.ROOT, env=env, stdout=out, stderr=out
                    ).returncode
                assert rc == 0, f"{name}: preDeployCommand exited {rc}:\n{dc.tail(log)}"
            proc = dc.launch(entry["startCommand"], dc.ROOT, env, log)
            procs[name] = (proc, log, f"http://127.0.0.1:{port}")
        for name, (proc, log, url) in procs.items():
            wait_ready(url + web[name]["healthCheckPath"], proc, log)
        # The workers, once their web service has migrated the database: its data folder and its
        # queue (REDIS_KEY_PREFIX), render.yaml's environment and start command otherwise.
        for name, entry in dc.worker_services(blueprint).items() if redis_url else ():
            label = f"{name}-worker"
            prefix = prefixes[name]
            env = {
                **base,
                **dc.resolve_env(blueprint, entry, ph),
                "DATA_DIR": str(work / name),
                "REDIS_KEY_PREFIX": prefix,
                "ULTRAI_NETGUARD_LOG": str(work / f"{label}.network.log"),
            }
            log = work / f"{label}.log"
            proc = dc.launch(entry["startCommand"], dc.ROOT, env, log)
            workers[name] = (proc, log, prefix)
        yield {"web": web, "procs": procs, "workers": workers, "work": work, "redis_url": redis_url}
    finally:
        every = [*procs.values(), *workers.values()]
        for proc, _, _ in every:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, _, _ in every:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for _, _, prefix in workers.values():
            await asyncio.to_thread(dc.forget_queue, redis_url, prefix)


def test_every_service_answers_its_health_check(deployed: dict[str, Any]) -> None:
    for name, (_, _, url) in deployed["procs"].items():
        status, body = request(url + deployed["web"][name]["healthCheckPath"])
        assert status == 200 and body["status"] in ("pass", "warn"), (name, body)


def test_no_service_reaches_the_network_while_starting(deployed: dict[str, Any]) -> None:
    for name in deployed["procs"]:
        log = deployed["work"] / f"{name}.network.log"
        assert not log.exists() or not log.read_text(), f"{name}:\n{log.read_text()}"


def test_gateway_reaches_every_service_it_routes_to(deployed: dict[str, Any]) -> None:
    _, _, url = deployed["procs"]["gateway"]
    status, body = request(url + "/health")
    assert status == 200, body
    for target in dc.gateway_routes():
        entries = [v for k, v in body["checks"].items() if k.split(":")[0] == target]
        assert entries and entries[0][0]["status"] in ("pass", "warn"), (target, body["checks"])


def test_a_client_cannot_choose_its_address(deployed: dict[str, Any]) -> None:
    """The start command must not let uvicorn rewrite the client address from X-Forwarded-For
    (`--forwarded-allow-ips='*'` would): auth's per-address limits would then count whatever address
    a caller writes. Auth is called here from loopback, which is not one of its trusted proxies.
    Five attempts at 2/minute: even with each of render.yaml's workers counting on its own (no
    Redis), one of them must refuse."""
    _, _, url = deployed["procs"]["auth"]
    statuses = []
    for i in range(5):
        status, _ = request(
            url + "/api/v1/auth/login",
            {"email": "nobody@example.com", "password": "not-the-password"},
            headers={"X-Forwarded-For": f"203.0.113.{i + 1}"},
        )
        statuses.append(status)
    assert 429 in statuses, statuses


def test_the_analysis_worker_takes_jobs(deployed: dict[str, Any]) -> None:
    """render.yaml's worker, started by its startCommand: it logs that it takes jobs, takes the
    deploy check's probe job from documents' queue (asking the database documents migrated), reaches
    no network, and stops cleanly on SIGTERM."""
    if not deployed["workers"]:
        pytest.skip("the analysis worker takes its jobs from Redis (TEST_REDIS_URL)")
    assert list(deployed["workers"]) == ["documents"]
    proc, log, prefix = deployed["workers"]["documents"]
    deadline = time.monotonic() + 60
    while WORKER_READY not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"exited {proc.returncode}:\n{dc.tail(log, 40)}"
        assert time.monotonic() < deadline, dc.tail(log, 40)
        time.sleep(0.1)
    assert dc.probe_worker(deployed["redis_url"], prefix) is None, dc.tail(log, 40)
    # Another queue than the worker's: nobody takes the job.
    assert "no worker took" in (dc.probe_worker(deployed["redis_url"], prefix + "-other", timeout=2) or "")
    dc.forget_queue(deployed["redis_url"], prefix + "-other")
    netlog = deployed["work"] / "documents-worker.network.log"
    assert not netlog.exists() or not netlog.read_text(), netlog.read_text()
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(30) in (0, -signal.SIGTERM, 128 + signal.SIGTERM), dc.tail(log)
    assert "analysis worker stopped" in log.read_text(), dc.tail(log)


def test_the_probe_names_the_queue_and_job_documents_uses(tmp_path: Path) -> None:
    from tests.documents.conftest import settings_for
    from ultrai_documents.analysis.runner import JOB_FUNCTION, analysis_queue

    settings = settings_for(tmp_path, redis_url="redis://127.0.0.1:6379/0", redis_key_prefix="p")
    assert dc.WORKER_QUEUE.format(prefix="p") == analysis_queue(settings).name
    assert dc.WORKER_JOB == JOB_FUNCTION


def test_services_stop_cleanly_on_sigterm(deployed: dict[str, Any]) -> None:
    proc, log, _ = deployed["procs"]["documents"]
    os.killpg(proc.pid, signal.SIGTERM)
    # uvicorn finishes its shutdown, then exits by the signal it received (0 from a supervisor).
    assert proc.wait(30) in (0, -signal.SIGTERM), dc.tail(log)
    assert "Application shutdown complete" in log.read_text(), dc.tail(log)
