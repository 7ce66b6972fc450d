"""API keys through the whole stack (four real processes, the fake provider over HTTP): the official
openai SDK with a key through the gateway, the list's last use and spend, usage per key, revocation
at every service, scopes, per-key budget and rpm before any provider call, and no key in any log,
error body or list."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import running_stack, stack_env
from tests.fakes.openai_server import FakeOpenAI
from tests.llm.conftest import LLM_ENV, MODELS, write_models_file
from tests.support.keys import new_key as make_key
from tests.support.users import bearer, new_access_token
from tests.support.waiting import eventually
from tools.stack import Stack

pytestmark = pytest.mark.e2e

KEYS = "/api/v1/auth/keys"
SERVICES = ("gateway", "auth", "documents", "llm")


@pytest.fixture(scope="session")
async def keys_stack(pg_databases, redis_url, fake_provider: FakeOpenAI) -> AsyncIterator[Stack]:
    env = {**await stack_env(pg_databases, redis_url, "keys"), **LLM_ENV}

    def models(workdir: Path) -> dict[str, str]:
        return {"LLM_MODELS_FILE": str(write_models_file(fake_provider, workdir / "models.json", MODELS))}

    async with running_stack(env, files=models) as st:
        yield st


async def new_key(stack: Stack, token: str, **body: object) -> dict:
    return await make_key(stack.url("gateway"), token, **body)


def sdk(stack: Stack, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=stack.url("gateway") + "/v1", api_key=key, max_retries=0, timeout=30)


def prompt() -> str:
    return f"Hello ({uuid.uuid4().hex[:8]})"


def logs(stack: Stack) -> str:
    return "".join((stack.workdir / f"{name}.log").read_text(errors="replace") for name in SERVICES)


async def test_key_lifecycle_with_the_openai_sdk_through_the_gateway(keys_stack: Stack, fake_provider) -> None:
    token = await new_access_token(keys_stack.url("gateway"), "keys")
    made = await new_key(keys_stack, token, name="sdk")
    key = made["key"]
    fake_provider.behave("priced", text="Paid answer.")
    client = sdk(keys_stack, key)
    try:
        completion = await client.chat.completions.create(
            model="priced", messages=[{"role": "user", "content": prompt()}], max_tokens=20
        )
    finally:
        await client.close()
    assert completion.choices[0].message.content == "Paid answer."

    async with httpx.AsyncClient(base_url=keys_stack.url("gateway"), timeout=30) as gw:
        # The list shows the key's last use and what it spent (reported by llm), never the key.
        async def listed() -> dict:
            return (await gw.get(KEYS, headers=bearer(token))).json()["keys"][0]

        entry = await eventually(listed, lambda e: e["spent_usd"] > 0, what="the key's spend in the list")
        assert entry["last_used_at"] is not None and entry["id"] == made["id"]
        assert key not in (await gw.get(KEYS, headers=bearer(token))).text
        # Usage per key, with the key and with the user's token.
        usage = (await gw.get("/api/v1/llm/usage", headers=bearer(key))).json()
        per_key = {row["key_id"]: row for row in usage["keys"]}
        assert per_key[made["id"]]["requests"] == 1 and per_key[made["id"]]["cost_usd"] > 0
        assert made["id"] in {
            r["key_id"] for r in (await gw.get("/api/v1/llm/usage", headers=bearer(token))).json()["keys"]
        }

        # Every service takes the key before it is revoked...
        direct = {
            "gateway": (keys_stack.url("gateway"), "/api/v1/documents"),
            "documents": (keys_stack.url("documents"), "/api/v1/documents"),
            "llm": (keys_stack.url("llm"), "/v1/models"),
            "gateway-llm": (keys_stack.url("gateway"), "/v1/models"),
        }
        for name, (base, path) in direct.items():
            assert (await gw.get(base + path, headers=bearer(key))).status_code == 200, name

        assert (await gw.delete(f"{KEYS}/{made['id']}", headers=bearer(token))).status_code == 204

        # ...and refuses it shortly after (the cached grant does not outlive the revocation).
        for name, (base, path) in direct.items():

            async def status(base: str = base, path: str = path) -> int:
                return (await gw.get(base + path, headers=bearer(key))).status_code

            await eventually(status, lambda s: s == 401, what=f"{name} refusing the revoked key", timeout=5)
            refusal = await gw.get(base + path, headers=bearer(key))
            assert key not in refusal.text and refusal.headers["content-type"].startswith("application/problem+json")
    # A key in a log line is a failure.
    assert key not in logs(keys_stack)
    assert made["id"] in logs(keys_stack)  # the logs do name keys, by id


async def test_scopes_a_documents_read_key_cannot_upload_or_chat(keys_stack: Stack, fake_provider) -> None:
    token = await new_access_token(keys_stack.url("gateway"), "scopes")
    key = (await new_key(keys_stack, token, scopes=["documents:read"]))["key"]
    async with httpx.AsyncClient(timeout=30) as http:
        for base in (keys_stack.url("gateway"), keys_stack.url("documents")):
            assert (await http.get(base + "/api/v1/documents", headers=bearer(key))).status_code == 200
            upload = await http.post(
                base + "/api/v1/documents", headers=bearer(key), files={"file": ("a.txt", b"hello", "text/plain")}
            )
            assert upload.status_code == 403, upload.text
            assert "documents:write" in upload.json()["detail"]
        chat = {"model": "alpha", "messages": [{"role": "user", "content": prompt()}]}
        for base in (keys_stack.url("gateway"), keys_stack.url("llm")):
            assert (await http.post(base + "/v1/chat/completions", json=chat, headers=bearer(key))).status_code == 403
        # No key is a credential for the account itself.
        assert (await http.get(keys_stack.url("gateway") + "/api/v1/auth/me", headers=bearer(key))).status_code == 401
    client = sdk(keys_stack, key)
    try:
        with pytest.raises(openai.PermissionDeniedError):
            await client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": prompt()}])
    finally:
        await client.close()
    assert fake_provider.calls("alpha") == []


async def test_per_key_rpm_is_a_429_with_retry_after_before_any_provider_call(keys_stack: Stack, fake_provider) -> None:
    token = await new_access_token(keys_stack.url("gateway"), "rpm")
    key = (await new_key(keys_stack, token, scopes=["llm"], rpm=2))["key"]
    body = {"model": "beta", "messages": [{"role": "user", "content": "x"}]}
    async with httpx.AsyncClient(base_url=keys_stack.url("gateway"), timeout=30) as gw:
        for _ in range(2):
            body["messages"][0]["content"] = prompt()
            assert (await gw.post("/v1/chat/completions", json=body, headers=bearer(key))).status_code == 200
        calls = len(fake_provider.calls("beta"))
        body["messages"][0]["content"] = prompt()
        limited = await gw.post("/v1/chat/completions", json=body, headers=bearer(key))
    assert limited.status_code == 429, limited.text
    assert int(limited.headers["Retry-After"]) > 0
    assert len(fake_provider.calls("beta")) == calls == 2


async def test_per_key_budget_is_a_402_before_any_provider_call(keys_stack: Stack, fake_provider) -> None:
    token = await new_access_token(keys_stack.url("gateway"), "budget")
    key = (await new_key(keys_stack, token, scopes=["llm"], budget_usd=0.000001))["key"]
    fake_provider.behave("priced", text="Expensive enough.")
    body = {"model": "priced", "messages": [{"role": "user", "content": prompt()}]}
    async with httpx.AsyncClient(base_url=keys_stack.url("gateway"), timeout=30) as gw:
        assert (await gw.post("/v1/chat/completions", json=body, headers=bearer(key))).status_code == 200
        calls = len(fake_provider.calls("priced"))
        body["messages"][0]["content"] = prompt()
        spent = await gw.post("/v1/chat/completions", json=body, headers=bearer(key))
        assert spent.status_code == 402, spent.text
        assert int(spent.headers["Retry-After"]) > 0
        assert len(fake_provider.calls("priced")) == calls
        # The owner's access token is not bound by the key's budget.
        body["messages"][0]["content"] = prompt()
        assert (await gw.post("/v1/chat/completions", json=body, headers=bearer(token))).status_code == 200


async def test_a_wrong_or_hashed_key_gets_the_same_401_everywhere(keys_stack: Stack) -> None:
    import hashlib

    token = await new_access_token(keys_stack.url("gateway"), "wrong")
    made = await new_key(keys_stack, token)
    key = made["key"]
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    stored = hashlib.sha256(key.encode()).hexdigest()
    async with httpx.AsyncClient(timeout=30) as http:
        for base, path in ((keys_stack.url("gateway"), "/v1/models"), (keys_stack.url("llm"), "/v1/models")):
            answers = []
            for attempt in (wrong, f"uai_{made['id']}_{stored}", stored):
                resp = await http.get(base + path, headers=bearer(attempt))
                assert resp.status_code == 401 and attempt not in resp.text
                answers.append(resp.json()["title"])
            assert len(set(answers)) == 1
    assert wrong not in logs(keys_stack)
