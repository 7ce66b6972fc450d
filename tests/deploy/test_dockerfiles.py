"""Each service's Dockerfile: a slim base on render.yaml's Python, a non-root user, only that
service's requirements and code, and render.yaml's startCommand as its command."""

from __future__ import annotations

import json
import re

from tools import deploy_check as dc


def instructions(name: str) -> list[tuple[str, str]]:
    return dc.dockerfile_instructions(dc.ROOT / "services" / name / "Dockerfile")


def test_every_service_has_a_dockerfile(folders: list[str]) -> None:
    for name in folders:
        assert (dc.ROOT / "services" / name / "Dockerfile").exists(), name


def test_slim_base_on_the_blueprint_python(web: dict, folders: list[str]) -> None:
    for name in folders:
        bases = [args for ins, args in instructions(name) if ins == "FROM"]
        assert len(bases) == 1, f"{name}: one stage expected, found {bases}"
        match = re.fullmatch(r"python:(\d+\.\d+\.\d+)-slim(-\w+)?", bases[0])
        assert match, f"{name}: {bases[0]} is not a slim Python image"
        python = next(v["value"] for v in web[name]["envVars"] if v["key"] == "PYTHON_VERSION")
        assert match.group(1) == python, f"{name}: image Python {match.group(1)}, render.yaml {python}"


def test_runs_as_a_non_root_user(folders: list[str]) -> None:
    for name in folders:
        steps = instructions(name)
        users = [i for i, (ins, _) in enumerate(steps) if ins == "USER"]
        assert users, f"{name}: no USER, the service would run as root"
        user = steps[users[-1]][1]
        assert user.split(":")[0] not in ("root", "0"), name
        cmd = next(i for i, (ins, _) in enumerate(steps) if ins == "CMD")
        assert users[-1] < cmd, f"{name}: USER comes after CMD"


def test_installs_only_its_own_requirements_like_render(web: dict, folders: list[str]) -> None:
    for name in folders:
        steps = instructions(name)
        pip = [args for ins, args in steps if ins == "RUN" and "pip install" in args]
        assert pip == [web[name]["buildCommand"]], f"{name}: {pip}"
        copied = [args.split()[0] for ins, args in steps if ins == "COPY"]
        others = [c for c in copied if c.startswith("services/") and not c.startswith(f"services/{name}/")]
        assert not others, f"{name} copies another service: {others}"
        assert "shared/" in copied, f"{name}: the shared package is not copied"


def test_command_is_the_blueprint_start_command(web: dict, folders: list[str]) -> None:
    for name in folders:
        cmd = [args for ins, args in instructions(name) if ins == "CMD"]
        assert len(cmd) == 1, name
        assert json.loads(cmd[0]) == ["/bin/sh", "-c", "exec " + web[name]["startCommand"]], name


def test_healthcheck_asks_readiness_without_curl(folders: list[str]) -> None:
    for name in folders:
        health = [args for ins, args in instructions(name) if ins == "HEALTHCHECK"]
        assert len(health) == 1 and "/ready" in health[0] and "urllib" in health[0], name


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    ignored = {line.strip() for line in (dc.ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"}
    assert {".git", ".venv", ".env", "data", ".deploy-check"} <= ignored
    # ...but never what the images copy.
    copied = {"shared", "services"}
    assert not {p for p in ignored if p.strip("/").split("/")[0] in copied}, ignored
