"""The origins auth accepts the browsers' session cookie from are the gateway's CORS origins: the same
variables with the same defaults, and every deployment file gives both services the same value."""

from __future__ import annotations

from typing import Any

from tests.deploy.conftest import SettingsFacts
from tools import deploy_check as dc

ORIGIN_VARIABLES = ("CORS_ORIGINS", "CORS_ORIGIN_REGEX")


def defaults(facts: SettingsFacts, service: str) -> dict[str, Any]:
    return {f["env"][0]: f["default"] for f in facts.fields[service] if f["env"][0] in ORIGIN_VARIABLES}


def test_auth_reads_the_gateway_origin_variables_with_the_same_defaults(settings_facts: SettingsFacts) -> None:
    for key in ORIGIN_VARIABLES:
        assert key in settings_facts.env_names("auth"), key
    assert defaults(settings_facts, "auth") == defaults(settings_facts, "gateway")


def test_render_gives_auth_the_gateway_origins(web: dict[str, dict[str, Any]]) -> None:
    gateway = {var["key"]: var for var in web["gateway"]["envVars"]}
    auth = {var["key"]: var for var in web["auth"]["envVars"]}
    for key in ORIGIN_VARIABLES:
        if key not in gateway:
            assert key not in auth, f"auth sets {key}, the gateway does not"
            continue
        var = auth.get(key)
        assert var is not None, f"render.yaml gives the gateway {key} but not auth"
        from_gateway = var.get("fromService") == {"type": "web", "name": web["gateway"]["name"], "envVarKey": key}
        same = {k: v for k, v in var.items() if k != "key"} == {k: v for k, v in gateway[key].items() if k != "key"}
        assert from_gateway or same, f"auth's {key} is neither the gateway's nor set the same way: {var}"


def test_render_environment_has_the_same_origins(settings_facts: SettingsFacts) -> None:
    for key in ORIGIN_VARIABLES:
        assert settings_facts.render_env["auth"].get(key) == settings_facts.render_env["gateway"].get(key), key


def test_compose_gives_auth_the_gateway_origins(compose: dict[str, Any]) -> None:
    auth = dc.compose_env(compose["services"]["auth"])
    gateway = dc.compose_env(compose["services"]["gateway"])
    for key in ORIGIN_VARIABLES:
        assert auth.get(key) == gateway.get(key), key
