"""The deploy check's own parts: the network guard, the Blueprint environment, the report."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tools import deploy_check as dc

PROBE = """
import socket, sys
results = []
for target in [("example.com", 80), ("192.0.2.1", 80)]:
    try:
        socket.create_connection(target, timeout=0.5)
        results.append("connected")
    except PermissionError:
        results.append("refused")
    except OSError:
        results.append("network error")
with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen()
    socket.create_connection(server.getsockname(), timeout=1).close()
    results.append("loopback ok")
print(",".join(results))
"""


def run_guarded(tmp_path: Path, log: Path | None) -> str:
    (tmp_path / "sitecustomize.py").write_text(dc.GUARD_MODULE)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp_path)}
    if log:
        env["ULTRAI_NETGUARD_LOG"] = str(log)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_network_guard_refuses_and_records_everything_but_loopback(tmp_path: Path) -> None:
    log = tmp_path / "network.log"
    assert run_guarded(tmp_path, log) == "refused,refused,loopback ok"
    text = log.read_text()
    assert "'example.com' refused" in text and "'192.0.2.1' refused" in text
    assert "File " in text  # with the stack that tried


def test_network_guard_is_off_without_its_log(tmp_path: Path) -> None:
    assert "refused" not in run_guarded(tmp_path, None)


def test_blueprint_environment_shares_generated_secrets(blueprint: dict, web: dict) -> None:
    ph = dc.Placeholders(ports={"ultrai-auth": 4321}, redis_url="redis://127.0.0.1:6379/0")
    auth = dc.resolve_env(blueprint, web["auth"], ph)
    documents = dc.resolve_env(blueprint, web["documents"], ph)
    assert len(auth["INTERNAL_TOKEN_SECRET"]) == 44  # base64 of 256 bits, as Render generates
    assert documents["INTERNAL_TOKEN_SECRET"] == auth["INTERNAL_TOKEN_SECRET"]
    assert documents["AUTH_URL"] == "127.0.0.1:4321"
    assert documents["REDIS_URL"] == "redis://127.0.0.1:6379/0"
    assert "DATABASE_URL" not in documents  # no database placeholder: the embedded SQLite
    assert "OPENAI_API_KEY" not in dc.resolve_env(blueprint, web["llm"], ph)  # sync: false, no value given
    ph.sync_values["OPENAI_API_KEY"] = "sk-placeholder"
    assert dc.resolve_env(blueprint, web["llm"], ph)["OPENAI_API_KEY"] == "sk-placeholder"


def test_report_marks_failures_and_bars() -> None:
    ok = dc.Result("gateway", packages=30, install_mb=60, start_s=0.5, rss_mb=60, worker_rss_mb=60, workers=1)
    slow = dc.Result("llm", packages=80, install_mb=300, start_s=7.0, rss_mb=200, worker_rss_mb=200, workers=1)
    broken = dc.Result("auth", failures=["did not come up"])
    lines = dc.table([ok, slow, broken]).splitlines()
    assert lines[2].endswith("ok") and "start-up over bar" in lines[3] and lines[4].endswith("FAIL")


def test_loopback_port_probe() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert dc.port_open("127.0.0.1", port)
    assert not dc.port_open("127.0.0.1", port)


def test_failure_names_what_stopped_the_process(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text(
        'Traceback (most recent call last):\n  File "x.py", line 1\n'
        "ModuleNotFoundError: No module named 'aiohttp'\nINFO:     Stopping parent process [1]\n"
    )
    assert dc.error_line(log) == "ModuleNotFoundError: No module named 'aiohttp'"
    log.write_text("auth: invalid setting: JWT_SIGNING_SECRET must be at least 32 characters\n")
    assert dc.error_line(log) == "auth: invalid setting: JWT_SIGNING_SECRET must be at least 32 characters"
    log.write_text("ERROR: No matching distribution found for nothing==1\n")
    assert dc.error_line(log).startswith("ERROR: No matching distribution")
    log.write_text("INFO: all fine\n")
    assert dc.error_line(log) is None


def test_image_layout_holds_only_what_the_dockerfile_copies(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for rel in ["shared/__init__.py", "services/x/requirements.txt", "services/x/ultrai_x/main.py", "services/y/a.py"]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("")
    (src / "services/x/Dockerfile").write_text(
        "FROM python:3.11.7-slim\nWORKDIR /app\nCOPY shared/ shared/\n"
        "COPY services/x/requirements.txt services/x/requirements.txt\nCOPY --chown=1:1 services/x/ services/x/\n"
    )
    image = dc.image_layout("x", src, tmp_path / "image", root=src)
    files = sorted(str(p.relative_to(image)) for p in image.rglob("*") if p.is_file())
    assert files == [
        "services/x/Dockerfile",
        "services/x/requirements.txt",
        "services/x/ultrai_x/main.py",
        "shared/__init__.py",
    ]


def test_a_missing_schema_fails_under_ci_and_skips_locally(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.deploy import conftest

    monkeypatch.setattr(conftest, "CI", True)
    with pytest.raises(pytest.fail.Exception):
        conftest.load_schema(tmp_path / "render-blueprint.schema.json")
    monkeypatch.setattr(conftest, "CI", False)
    with pytest.raises(pytest.skip.Exception):
        conftest.load_schema(tmp_path / "render-blueprint.schema.json")
