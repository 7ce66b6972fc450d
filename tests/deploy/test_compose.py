"""docker-compose.yml: valid against the Compose specification's schema, and consistent with the code
and with render.yaml (same images, same migrations, the same settings provided)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from jsonschema import Draft7Validator

from tests.deploy.conftest import SettingsFacts, load_schema, not_settings
from tools import deploy_check as dc


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = load_schema(dc.COMPOSE_SCHEMA)
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def app_services(compose: dict[str, Any], folders: list[str]) -> dict[str, dict[str, Any]]:
    return {name: compose["services"][name] for name in folders if name in compose["services"]}


def test_compose_is_valid_against_compose_schema(validator: Draft7Validator, compose: dict) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("breakage", ["unknown depends_on condition", "unknown service key", "bad healthcheck"])
def test_schema_check_catches_broken_compose_files(validator: Draft7Validator, compose: dict, breakage: str) -> None:
    broken = copy.deepcopy(compose)
    gateway = broken["services"]["gateway"]
    if breakage == "unknown depends_on condition":
        gateway["depends_on"]["auth"]["condition"] = "service_ready"
    elif breakage == "unknown service key":
        gateway["dependson"] = gateway.pop("depends_on")
    else:
        gateway["healthcheck"] = {**gateway["healthcheck"], "intervall": "5s"}
    assert not validator.is_valid(broken)


def test_every_service_has_its_image_and_readiness_healthcheck(compose: dict, folders: list[str]) -> None:
    services = app_services(compose, folders)
    assert sorted(services) == folders
    for name, svc in services.items():
        assert svc["build"] == {"context": ".", "dockerfile": f"services/{name}/Dockerfile"}, name
        test = svc["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"] and "/ready" in test[3] and "urllib" in test[3], name
        # The image's own command is render.yaml's startCommand (tests/deploy/test_dockerfiles.py).
        assert "command" not in svc and "entrypoint" not in svc, name


def test_datastores_have_healthchecks_and_named_volumes(compose: dict) -> None:
    pg, redis = compose["services"]["postgres"], compose["services"]["redis"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert redis["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    # postgres 18+ images keep their data under /var/lib/postgresql.
    assert any(v.endswith(":/var/lib/postgresql") for v in pg["volumes"])
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"


def test_depends_on_waits_for_health_and_for_migrations(compose: dict, web: dict, folders: list[str]) -> None:
    services = compose["services"]
    for name, svc in app_services(compose, folders).items():
        depends = svc.get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on must use the long form"
        for target, cond in depends.items():
            expected = "service_completed_successfully" if compose_is_one_shot(services[target]) else "service_healthy"
            assert cond["condition"] == expected, f"{name} -> {target}"
            assert "healthcheck" in services[target] or expected != "service_healthy", target
        if dc.has_migrations(name):
            migrations = [t for t in depends if dc.compose_command(services[t]) == web[name]["preDeployCommand"]]
            assert migrations, f"{name} does not wait for a one-shot running its preDeployCommand"
            one_shot = services[migrations[0]]
            assert one_shot["build"] == svc["build"] and one_shot.get("image") == svc.get("image")
            assert one_shot.get("restart") == "no"


def compose_is_one_shot(svc: dict[str, Any]) -> bool:
    return svc.get("restart") == "no" and dc.compose_command(svc) is not None


def test_every_setting_production_needs_is_provided(
    compose: dict, folders: list[str], settings_facts: SettingsFacts
) -> None:
    """Locally the services run in development, but every variable production cannot start without
    (found from the settings classes against render.yaml) is provided here too, and the settings
    load from exactly this environment."""
    problems = []
    for name, svc in app_services(compose, folders).items():
        env = dc.compose_env(svc)
        for needed in settings_facts.production_required[name]:
            if not set(env) & set(needed.split("|")):
                problems.append(f"{name}: docker-compose.yml does not provide {needed}")
        result = dc.probe_settings(name, [env])["results"][0]
        if result is not None:
            problems.append(f"{name}: settings reject the compose environment: {result}")
    assert not problems, "\n".join(problems)


def test_every_variable_is_a_setting_or_read_by_the_runtime(
    compose: dict, folders: list[str], settings_facts: SettingsFacts
) -> None:
    problems = [
        f"{name}: {key} is not a setting of {name}"
        for name, svc in app_services(compose, folders).items()
        for key in not_settings(dc.compose_env(svc), settings_facts.env_names(name))
    ]
    assert not problems, "\n".join(problems)


def test_one_shots_get_the_service_environment(compose: dict, web: dict, folders: list[str]) -> None:
    services = compose["services"]
    for name in folders:
        if not dc.has_migrations(name):
            continue
        one_shot = next(s for s in services.values() if dc.compose_command(s) == web[name]["preDeployCommand"])
        assert dc.compose_env(one_shot)["DATABASE_URL"] == dc.compose_env(services[name])["DATABASE_URL"]


def test_gateway_routes_point_at_compose_services(compose: dict, settings_facts: SettingsFacts) -> None:
    services = compose["services"]
    gateway_env = dc.compose_env(services["gateway"])
    for target in dc.gateway_routes():
        assert target in services, f"the gateway routes to {target}, which docker-compose.yml does not run"
        port = dc.compose_env(services[target])["PORT"]
        assert gateway_env.get(f"{target.upper()}_URL") == f"http://{target}:{port}"
        assert target in services["gateway"]["depends_on"]


def test_only_the_gateway_is_published_beyond_loopback(compose: dict, folders: list[str]) -> None:
    for name, svc in app_services(compose, folders).items():
        for port in svc.get("ports") or []:
            if name != "gateway":
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_litellm_uses_its_local_cost_map(compose: dict, folders: list[str]) -> None:
    for name, svc in app_services(compose, folders).items():
        closure, _ = dc.requirement_closure(dc.ROOT / "services" / name / "requirements.txt")
        if dc.LLM_ONLY in closure or dc.LLM_ONLY in dc.third_party_imports(name):
            assert dc.compose_env(svc).get("LITELLM_LOCAL_MODEL_COST_MAP") == "True", name


def test_interpolation_follows_compose_rules() -> None:
    assert dc.interpolate("${A:-x}") == "x"
    assert dc.interpolate("${A:-x}", {"A": ""}) == "x"
    assert dc.interpolate("${A-x}", {"A": ""}) == ""
    assert dc.interpolate("${A}-$$B", {"A": "1"}) == "1-$B"


def test_the_analysis_worker_runs_on_the_documents_image(compose: dict) -> None:
    worker = compose["services"]["documents-worker"]
    documents = compose["services"]["documents"]
    assert worker["image"] == documents["image"] and worker["build"] == documents["build"]
    command = "cd services/documents && PYTHONPATH=../.. exec python -m ultrai_documents.worker"
    assert dc.compose_command(worker) == command
    # No HTTP: the image's readiness check is off; it waits for the stores and the migrations.
    assert worker["healthcheck"] == {"disable": True}
    assert worker["depends_on"]["migrate-documents"]["condition"] == "service_completed_successfully"
    env = dc.compose_env(worker)
    assert env["REDIS_URL"] and env["DATABASE_URL"] and env["LLM_URL"] == "http://llm:8003"
