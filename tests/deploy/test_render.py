"""render.yaml: valid against Render's published Blueprint schema, and consistent with the code."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.deploy.conftest import SettingsFacts, load_schema, not_settings
from tools import deploy_check as dc
from tools.stack import SERVICES

SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|SEED)$")


def start_command(name: str) -> str:
    return (
        f"uvicorn ultrai_{name}.main:app --app-dir services/{name} --host 0.0.0.0 --port $PORT "
        "--workers ${WEB_CONCURRENCY:-1} --no-proxy-headers --timeout-graceful-shutdown 20"
        + "".join(f" {arg}" for arg in SERVICES[name].extra_args)
    )


def env_entries(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {var["key"]: var for var in entry.get("envVars") or []}


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = load_schema(dc.RENDER_SCHEMA)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_blueprint_is_valid_against_render_schema(validator: Draft202012Validator, blueprint: dict) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(blueprint)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    "breakage",
    ["key value without ipAllowList", "unknown service key", "unknown plan", "env var with a typo"],
)
def test_schema_check_catches_broken_blueprints(
    validator: Draft202012Validator, blueprint: dict, breakage: str
) -> None:
    broken = copy.deepcopy(blueprint)
    kv = next(s for s in broken["services"] if s["type"] == "keyvalue")
    web = next(s for s in broken["services"] if s["type"] == "web")
    if breakage == "key value without ipAllowList":
        del kv["ipAllowList"]
    elif breakage == "unknown service key":
        web["startCmd"] = web.pop("startCommand")
    elif breakage == "unknown plan":
        web["plan"] = "tiny"
    else:
        web["envVars"].append({"key": "X", "fromServce": {"name": "ultrai-auth", "type": "web"}})
    assert not validator.is_valid(broken)


def test_every_service_folder_is_a_web_service(web: dict, folders: list[str]) -> None:
    assert sorted(web) == folders


def test_build_pre_deploy_and_start_commands(web: dict) -> None:
    for name, entry in web.items():
        assert entry["runtime"] == "python", name
        assert "rootDir" not in entry, f"{name}: rootDir would leave shared/ out of the build"
        assert entry["buildCommand"] == f"pip install -r services/{name}/requirements.txt"
        assert entry["startCommand"] == start_command(name)
        assert (dc.ROOT / "services" / name / f"ultrai_{name}" / "main.py").exists()
        if dc.has_migrations(name):
            expected = f"cd services/{name} && PYTHONPATH=../.. python -m ultrai_{name}.migrate"
            assert entry.get("preDeployCommand") == expected
        else:
            assert "preDeployCommand" not in entry, f"{name} has no migrations to run"


def test_pushes_deploy_only_after_ci_passes(web: dict) -> None:
    for name, entry in web.items():
        assert entry.get("autoDeployTrigger") == "checksPass", name


def test_health_check_is_the_service_own_readiness(web: dict) -> None:
    # Never the gateway's aggregated /health: one service's outage would get the gateway pulled.
    for name, entry in web.items():
        assert entry.get("healthCheckPath") == "/ready", name


def test_build_filter_redeploys_only_what_depends_on_a_change(web: dict, folders: list[str]) -> None:
    for name, entry in web.items():
        paths = entry["buildFilter"]["paths"]
        assert "shared/**" in paths and f"services/{name}/**" in paths, name
        others = [p for p in paths if any(p.startswith(f"services/{o}/") for o in folders if o != name)]
        assert not others, f"{name} would redeploy on another service's change: {others}"
        assert entry["buildFilter"].get("ignoredPaths"), name


def test_python_version_is_pinned_and_the_same_everywhere(web: dict) -> None:
    versions = {name: env_entries(entry).get("PYTHON_VERSION", {}).get("value") for name, entry in web.items()}
    assert all(v and re.fullmatch(r"3\.\d+\.\d+", str(v)) for v in versions.values()), versions
    assert len(set(versions.values())) == 1, versions


def test_references_name_existing_resources(blueprint: dict) -> None:
    services = {s["name"]: s for s in blueprint["services"]}
    databases = {d["name"] for d in blueprint.get("databases") or []}
    problems = []
    for entry in blueprint["services"]:
        for key, var in env_entries(entry).items():
            where = f"{entry['name']}.{key}"
            if "fromDatabase" in var:
                if var["fromDatabase"]["name"] not in databases:
                    problems.append(f"{where}: no database {var['fromDatabase']['name']!r}")
            if "fromService" in var:
                ref = var["fromService"]
                target = services.get(ref["name"])
                if target is None:
                    problems.append(f"{where}: no service {ref['name']!r}")
                    continue
                if ref["type"] != target["type"]:
                    problems.append(f"{where}: {ref['name']} is a {target['type']}, not a {ref['type']}")
                if "envVarKey" in ref and ref["envVarKey"] not in env_entries(target):
                    problems.append(f"{where}: {ref['name']} has no variable {ref['envVarKey']}")
                if "envVarKey" not in ref and "property" not in ref:
                    problems.append(f"{where}: names neither a property nor an envVarKey")
    assert not problems, "\n".join(problems)


def test_datastores_are_private(blueprint: dict) -> None:
    for entry in blueprint["services"]:
        if entry["type"] in ("keyvalue", "redis"):
            assert entry["ipAllowList"] == [], entry["name"]
    for db in blueprint["databases"]:
        assert db.get("ipAllowList") == [], db["name"]


def test_every_setting_production_needs_is_provided(settings_facts: SettingsFacts, web: dict) -> None:
    """The settings load from exactly what render.yaml provides (ENVIRONMENT=production), and every
    field without a default and every secret whose default is a development value is set."""
    problems = []
    for name in web:
        if settings_facts.render_result[name] is not None:
            problems.append(f"{name}: settings reject render.yaml's environment: {settings_facts.render_result[name]}")
        provided = set(env_entries(web[name]))
        for needed in settings_facts.production_required[name]:
            if not provided & set(needed.split("|")):
                problems.append(f"{name}: render.yaml does not provide {needed}")
    assert not problems, "\n".join(problems)


def test_every_variable_is_a_setting_or_read_by_the_runtime(blueprint: dict, settings_facts: SettingsFacts) -> None:
    """A variable no settings class has is ignored where it lands: a misspelt setting would deploy
    with its default."""
    entries = [*dc.web_services(blueprint).items(), *dc.worker_services(blueprint).items()]
    problems = [
        f"{name}: {key} is not a setting of {name}"
        for name, entry in entries
        for key in not_settings(env_entries(entry), settings_facts.env_names(name))
    ]
    assert not problems, "\n".join(problems)


def test_a_misspelt_setting_is_caught(web: dict, settings_facts: SettingsFacts) -> None:
    keys = [*env_entries(web["documents"]), "EXTRACT_CONCURENCY"]
    assert not_settings(keys, settings_facts.env_names("documents")) == ["EXTRACT_CONCURENCY"]


def test_render_runs_in_production(web: dict) -> None:
    for name, entry in web.items():
        assert env_entries(entry)["ENVIRONMENT"]["value"] == "production", name
        assert str(env_entries(entry)["WEB_CONCURRENCY"]["value"]).isdigit(), name


def test_secrets_are_never_written_in_the_blueprint(web: dict, settings_facts: SettingsFacts) -> None:
    problems = []
    for name, entry in web.items():
        secret_names = {e for f in settings_facts.fields[name] if f["secret"] for e in f["env"]}
        for key, var in env_entries(entry).items():
            if (key in secret_names or SECRET_NAME.search(key)) and "value" in var:
                problems.append(f"{name}: {key} has a literal value (use generateValue, sync: false or fromService)")
    assert not problems, "\n".join(problems)


def test_provider_keys_are_asked_for_not_synced(web: dict, settings_facts: SettingsFacts) -> None:
    for name, entry in web.items():
        for f in settings_facts.fields[name]:
            for env in f["env"]:
                if env.endswith("_API_KEY"):
                    var = env_entries(entry).get(env)
                    assert var is not None and var.get("sync") is False, f"{name}: {env} should be sync: false"


def test_gateway_routes_point_at_services_in_the_blueprint(web: dict, settings_facts: SettingsFacts) -> None:
    gateway = env_entries(web["gateway"])
    for target in dc.gateway_routes():
        assert target in web, f"the gateway routes to {target}, which render.yaml does not deploy"
        key = f"{target.upper()}_URL"
        assert key in settings_facts.env_names("gateway"), f"GatewaySettings has no {key}"
        ref = gateway.get(key, {}).get("fromService")
        assert ref == {"type": "web", "name": web[target]["name"], "property": "hostport"}, key


def test_services_that_receive_private_traffic_are_on_paid_plans(blueprint: dict, web: dict) -> None:
    # Free web services can send private traffic but not receive it, and have no preDeployCommand.
    receivers = {
        var["fromService"]["name"]
        for entry in blueprint["services"]
        for var in entry.get("envVars") or []
        if "fromService" in var and var["fromService"].get("property") in ("host", "hostport")
    }
    for name, entry in web.items():
        if entry["name"] in receivers or "preDeployCommand" in entry:
            assert entry.get("plan", "starter") != "free", name


def test_litellm_uses_its_local_cost_map(web: dict) -> None:
    for name, entry in web.items():
        closure, _ = dc.requirement_closure(dc.ROOT / "services" / name / "requirements.txt")
        uses = dc.LLM_ONLY in closure or dc.LLM_ONLY in dc.third_party_imports(name)
        if uses:
            assert env_entries(entry).get("LITELLM_LOCAL_MODEL_COST_MAP", {}).get("value") == "True", name


# ---- the analysis worker --------------------------------------------------------------------------


def test_the_analysis_worker_is_a_background_worker_with_the_documents_build(blueprint: dict) -> None:
    workers = dc.worker_services(blueprint)
    assert sorted(workers) == ["documents"]
    entry = workers["documents"]
    assert entry["type"] == "worker" and entry["runtime"] == "python"
    assert entry["startCommand"] == "cd services/documents && PYTHONPATH=../.. python -m ultrai_documents.worker"
    assert entry.get("autoDeployTrigger") == "checksPass"
    # A worker is not a web service: the web checks (ports, health paths) do not apply to it.
    assert "documents" in dc.web_services(blueprint)
    assert dc.web_services(blueprint)["documents"]["type"] == "web"


def test_workers_agree_with_their_web_service_and_compose(blueprint: dict, compose: dict) -> None:
    assert dc.worker_problems(blueprint, compose) == []


@pytest.mark.parametrize(
    "breakage", ["another build", "no queue", "another database", "wrong entry point", "not in compose"]
)
def test_worker_cross_check_catches_broken_workers(blueprint: dict, compose: dict, breakage: str) -> None:
    broken = copy.deepcopy(blueprint)
    broken_compose = copy.deepcopy(compose)
    worker = next(s for s in broken["services"] if s["type"] == "worker")
    if breakage == "another build":
        worker["buildCommand"] += " litellm"
    elif breakage == "no queue":
        worker["envVars"] = [v for v in worker["envVars"] if v["key"] != "REDIS_URL"]
    elif breakage == "another database":
        next(v for v in worker["envVars"] if v["key"] == "DATABASE_URL")["fromDatabase"]["name"] = "other-db"
    elif breakage == "wrong entry point":
        worker["startCommand"] = worker["startCommand"].replace(".worker", ".main")
    else:
        del broken_compose["services"]["documents-worker"]
    assert dc.worker_problems(broken, broken_compose)


def test_the_worker_settings_load_from_what_render_provides(blueprint: dict) -> None:
    """The worker reads the documents settings: render.yaml's environment for it must load them, in
    production, with the queue on (REDIS_URL)."""
    from tests.deploy.conftest import RENDER_LIKE

    entry = dc.worker_services(blueprint)["documents"]
    env = dc.resolve_env(blueprint, entry, RENDER_LIKE)
    assert env["ENVIRONMENT"] == "production" and env["REDIS_URL"]
    probe = dc.probe_settings("documents", [env])
    assert probe["results"][0] is None, probe["results"][0]
