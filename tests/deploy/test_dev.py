"""``make dev`` (tools/dev.py): when it starts the web app's dev server, when it installs the web
dependencies first, and that the API allows the dev server's origins by default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.settings import CorsSettings
from tools import dev


@pytest.mark.parametrize(
    ("answer", "major"), [("v20.11.1\n", 20), ("v22.0.0", 22), ("18.19.0", 18), ("", None), ("node", None)]
)
def test_node_major_version(answer: str, major: int | None) -> None:
    assert dev.node_major(answer) == major


def lay_out(web: Path, *, modules: bool, lock_newer: bool) -> None:
    web.mkdir()
    lock = web / "package-lock.json"
    lock.write_text("{}")
    if modules:
        (web / "node_modules").mkdir()
        marker = web / "node_modules" / ".package-lock.json"
        marker.write_text("{}")
        stamp = lock.stat().st_mtime
        os.utime(marker, (stamp + (-60 if lock_newer else 60),) * 2)


@pytest.mark.parametrize(
    ("modules", "lock_newer", "expected"),
    [(False, False, True), (True, True, True), (True, False, False)],
    ids=["no node_modules", "lock file changed since the install", "installed and current"],
)
def test_npm_ci_runs_only_when_node_modules_is_missing_or_stale(
    tmp_path: Path, modules: bool, lock_newer: bool, expected: bool
) -> None:
    web = tmp_path / "web"
    lay_out(web, modules=modules, lock_newer=lock_newer)
    assert dev.needs_install(web) is expected


def test_without_node_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev.shutil, "which", lambda name: None)
    problem = dev.web_tools()
    assert problem is not None and "Node.js 20+" in problem and "npm" in problem


def test_the_api_allows_the_dev_server_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("CORS_ORIGINS", "CORS_ORIGIN_REGEX"):
        monkeypatch.delenv(key, raising=False)
    settings = CorsSettings(environment="development")
    for origin in (dev.APP_URL, f"http://127.0.0.1:{dev.WEB_PORT}"):
        assert settings.origin_allowed(origin), origin
