"""The parts of `make deploy-check` that need no install: every service's preDeployCommand and
startCommand, exactly as render.yaml writes them, run by a shell with this environment's packages,
render.yaml's environment (production) and the network guard; each must answer healthCheckPath."""

from __future__ import annotations

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
from tools.stack import free_port

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
            if name == "auth":
                env["LOGIN_RATE_PER_ADDRESS"] = "2/minute"
            log = work / f"{name}.log"
            if "preDeployCommand" in entry:
                with open(log, "ab") as out:
                    rc = subprocess.run(
                        ["bash", "-c", entry["preDeployCommand"]], cwd=dc.ROOT, env=env, stdout=out, stderr=out
                    ).returncode
                assert rc == 0, f"{name}: preDeployCommand exited {rc}:\n{dc.tail(log)}"
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    ["bash", "-c", entry["startCommand"]],
                    cwd=dc.ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            procs[name] = (proc, log, f"http://127.0.0.1:{port}")
        for name, (proc, log, url) in procs.items():
            wait_ready(url + web[name]["healthCheckPath"], proc, log)
        yield {"web": web, "procs": procs, "work": work}
    finally:
        for proc, _, _ in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, _, _ in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


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


def test_services_stop_cleanly_on_sigterm(deployed: dict[str, Any]) -> None:
    proc, log, _ = deployed["procs"]["documents"]
    os.killpg(proc.pid, signal.SIGTERM)
    # uvicorn finishes its shutdown, then exits by the signal it received (0 from a supervisor).
    assert proc.wait(30) in (0, -signal.SIGTERM), dc.tail(log)
    assert "Application shutdown complete" in log.read_text(), dc.tail(log)
