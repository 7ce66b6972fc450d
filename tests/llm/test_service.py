"""The llm service's own set-up: its models from env keys and the models file, a bad models file
stopping it at start, and a service acting for a user (the documents service's way in)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from shared.settings import DEV_INTERNAL_TOKEN_SECRET
from tests.fakes.openai_server import FakeOpenAI
from tests.llm.conftest import settings, unique
from tools.stack import ROOT, SERVICES, service_env
from ultrai_llm.catalog import CatalogError, build_catalog


def test_provider_keys_offer_default_models_with_their_limits():
    catalog = build_catalog(settings(openai_api_key="sk-test", gemini_api_key="g-test"))
    assert {"gpt-4o-mini", "gpt-4o", "gemini-2.5-flash"} <= set(catalog.specs)
    mini = catalog.specs["gpt-4o-mini"]
    assert mini.provider == "openai" and mini.context_window == 128000 and mini.input_cost_per_token > 0
    assert catalog.specs["gemini-2.5-flash"].provider == "gemini"
    entry = next(e for e in catalog.model_list if e["model_name"] == "gemini-2.5-flash")
    assert entry["litellm_params"] == {"model": "gemini/gemini-2.5-flash", "api_key": "g-test"}
    assert build_catalog(settings()).empty


def test_models_file_yaml_with_fallbacks_and_an_override(tmp_dir):
    path = tmp_dir / "models.yaml"
    path.write_text(
        "model_list:\n"
        "  - model_name: local-llama\n"
        "    litellm_params: {model: ollama_chat/llama3.1, api_base: 'http://127.0.0.1:11434'}\n"
        "    model_info: {max_input_tokens: 8192}\n"
        "  - model_name: local-llama\n"
        "    litellm_params: {model: ollama_chat/llama3.1, api_base: 'http://127.0.0.1:11435'}\n"
        "  - model_name: gpt-4o-mini\n"
        "    litellm_params: {model: openai/gpt-4o-mini, api_base: 'http://127.0.0.1:8080/v1', api_key: k}\n"
        "router_settings:\n"
        "  fallbacks: [{local-llama: [gpt-4o-mini]}]\n"
    )
    catalog = build_catalog(settings(llm_models_file=path, openai_api_key="sk-test"))
    llama = catalog.specs["local-llama"]
    assert llama.deployments == 2 and llama.context_window == 8192 and llama.provider == "ollama_chat"
    # The file's gpt-4o-mini replaces the one the key would give; the key's other models stay.
    minis = [e for e in catalog.model_list if e["model_name"] == "gpt-4o-mini"]
    assert len(minis) == 1 and minis[0]["litellm_params"]["api_base"] == "http://127.0.0.1:8080/v1"
    assert "gpt-4o" in catalog.specs
    assert catalog.fallbacks == [{"local-llama": ["gpt-4o-mini"]}]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json or yaml: [", "neither JSON nor YAML"),
        (json.dumps({"model_list": [{"litellm_params": {"model": "x"}}]}), "model_name is missing"),
        (json.dumps([{"model_name": "a", "litellm_params": {}}]), "litellm_params.model is missing"),
        (json.dumps([{"model_name": "ultrai/x", "litellm_params": {"model": "m"}}]), "reserved"),
        (
            json.dumps(
                {"model_list": [{"model_name": "a", "litellm_params": {"model": "m"}}], "fallbacks": [{"a": ["b"]}]}
            ),
            "unknown models: b",
        ),
    ],
)
def test_a_bad_models_file_is_refused_clearly(tmp_dir, content, message):
    path = tmp_dir / "models.json"
    path.write_text(content)
    with pytest.raises(CatalogError, match=message):
        build_catalog(settings(llm_models_file=path))


def test_a_bad_models_file_stops_the_service_at_start_naming_the_variable(tmp_dir):
    spec = SERVICES["llm"]
    env = service_env(spec, {"LLM_MODELS_FILE": str(tmp_dir / "missing.yaml"), "DATA_DIR": str(tmp_dir)})
    proc = subprocess.run(
        [sys.executable, "-c", "import ultrai_llm.main"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "LLM_MODELS_FILE" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.e2e
async def test_a_service_acts_for_a_user_and_the_usage_is_theirs(llm_stack, gateway, fake_provider: FakeOpenAI):
    fake_provider.behave("delta", text="for the user", prompt_tokens=7, completion_tokens=3)
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(
            llm_stack.url("auth") + "/api/v1/auth/service-token",
            json={"service": "documents", "audience": "llm"},
            headers={"Authorization": f"Bearer {DEV_INTERNAL_TOKEN_SECRET}"},
        )
        assert r.status_code == 200, r.text
        service_token = r.json()["access_token"]
        me = (await gateway.get("/api/v1/auth/me")).json()["id"]
        before = (await gateway.get("/api/v1/llm/usage")).json()
        delta_before = {m["model"]: m for m in before["models"]}.get("delta", {"requests": 0})["requests"]
        body = {"prompt": unique(), "models": ["delta"], "pattern": "parallel"}
        headers = {"Authorization": f"Bearer {service_token}"}
        # Without saying for whom: refused.
        r = await client.post(llm_stack.url("llm") + "/api/v1/llm/orchestrate", json=body, headers=headers)
        assert r.status_code == 401
        # The model list concerns no user: a service token alone reads it (the documents service's
        # default models), and a service token meant for another service does not.
        r = await client.get(llm_stack.url("llm") + "/api/v1/llm/models", headers=headers)
        assert r.status_code == 200 and "alpha" in [m["name"] for m in r.json()["models"]]
        r = await client.post(
            llm_stack.url("auth") + "/api/v1/auth/service-token",
            json={"service": "documents", "audience": "auth"},
            headers={"Authorization": f"Bearer {DEV_INTERNAL_TOKEN_SECRET}"},
        )
        other = {"Authorization": f"Bearer {r.json()['access_token']}"}
        assert (await client.get(llm_stack.url("llm") + "/api/v1/llm/models", headers=other)).status_code == 401
        r = await client.post(
            llm_stack.url("llm") + "/api/v1/llm/orchestrate", json=body, headers={**headers, "X-On-Behalf-Of": me}
        )
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["text"] == "for the user"
    after = (await gateway.get("/api/v1/llm/usage")).json()
    assert {m["model"]: m for m in after["models"]}["delta"]["requests"] == delta_before + 1


async def test_health_warns_while_litellm_cools_a_failing_model_down(fake_provider: FakeOpenAI, tmp_dir):
    from shared.kv import KeyValue
    from ultrai_llm.cache import ResponseCache
    from ultrai_llm.engine import Engine
    from ultrai_llm.schemas import ModelParams
    from ultrai_llm.service import Llm, providers_check

    path = fake_provider.models_file(tmp_dir / "models.json", ["limited", "alpha"])
    config = settings(llm_models_file=path, llm_allowed_fails=0, llm_cooldown_time=60, llm_num_retries=0)
    kv = KeyValue(None, service="llm-test")
    engine = Engine(config, build_catalog(config), ResponseCache(kv, 60))
    check = providers_check(Llm(engine, None, None, None))  # the check reads the engine only
    assert (await check.probe()).status == "pass"
    fake_provider.behave("limited", status=500, retry_after=0.01)
    for _ in range(3):
        result = await engine.call(
            "limited", [{"role": "user", "content": unique()}], ModelParams(), stage="answer", scope="u"
        )
        assert result.status == "error"
    outcome = await check.probe()
    assert outcome.status == "warn" and "limited" in outcome.output and "alpha" not in outcome.output
