"""Fixtures for the deploy checks: render.yaml, docker-compose.yml, their published schemas (read in
place from ../shared/schemas, never copied into the repo) and the settings classes, probed once."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from tools import deploy_check as dc

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def load_schema(path: Path) -> dict[str, Any]:
    if not path.exists():
        message = f"schema {path} is missing (the repository is cloned with ../shared beside it)"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def blueprint() -> dict[str, Any]:
    return dc.load_yaml(dc.BLUEPRINT)


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return dc.load_yaml(dc.COMPOSE)


@pytest.fixture(scope="session")
def web(blueprint: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dc.web_services(blueprint)


@pytest.fixture(scope="session")
def folders() -> list[str]:
    return dc.service_folders()


# Placeholders shaped like what Render hands out (the settings must accept these forms).
RENDER_LIKE = dc.Placeholders(
    database_url="postgres://ultrai:secret@dpg-example-a:5432/ultrai",
    redis_url="redis://red-example:6379",
    sync_values={"CORS_ORIGINS": "https://app.example.com"},
)


# What a deploy file may set besides the services' settings: variables read by the platform, the
# interpreter, the C library or a library (pydantic-settings ignores a name that is no setting, so
# a misspelt setting would otherwise deploy without a word).
RUNTIME_VARIABLES = {
    "PYTHON_VERSION": "Render's Python runtime",
    "WEB_CONCURRENCY": "the start command's uvicorn --workers",
    "PORT": "the start command's uvicorn --port",
    "GLIBC_TUNABLES": "glibc's allocator (auth: argon2's memory by huge pages)",
    "LITELLM_LOCAL_MODEL_COST_MAP": "litellm: its bundled cost map, no download at start",
}


def not_settings(keys: Iterable[str], setting_names: set[str]) -> list[str]:
    """The variables among ``keys`` that are neither a setting nor read by the runtime."""
    return sorted(k for k in keys if k not in setting_names and k not in RUNTIME_VARIABLES)


class SettingsFacts:
    """Per service: the settings fields and which variables production cannot start without."""

    def __init__(self, blueprint: dict[str, Any], web: dict[str, dict[str, Any]]) -> None:
        self.fields: dict[str, list[dict[str, Any]]] = {}
        self.render_env: dict[str, dict[str, str]] = {}
        self.render_result: dict[str, list[str] | None] = {}
        self.production_required: dict[str, set[str]] = {}
        for name, entry in web.items():
            env = dc.resolve_env(blueprint, entry, RENDER_LIKE)
            keys = sorted(env)
            probe = dc.probe_settings(name, [env] + [{k: v for k, v in env.items() if k != key} for key in keys])
            self.fields[name] = probe["fields"]
            self.render_env[name] = env
            self.render_result[name] = probe["results"][0]
            needed = {key for key, result in zip(keys, probe["results"][1:], strict=True) if result is not None}
            for f in probe["fields"]:
                if f["required"]:
                    needed.add("|".join(f["env"]))
                # A secret with a default is a development value: production must set it.
                if f["secret"] and f["has_default_value"]:
                    needed.add("|".join(f["env"]))
            self.production_required[name] = needed

    def env_names(self, name: str) -> set[str]:
        return {e for f in self.fields[name] for e in f["env"]}


@pytest.fixture(scope="session")
def settings_facts(blueprint: dict[str, Any], web: dict[str, dict[str, Any]]) -> SettingsFacts:
    return SettingsFacts(blueprint, web)
