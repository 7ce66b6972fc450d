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


# ---- analyses started with a key: their llm calls are the key's ----------------------------------

DOCS = "/api/v1/documents"


async def upload(gw: httpx.AsyncClient, credential: str) -> str:
    text = f"A memo about the move to the new office ({uuid.uuid4().hex}).".encode()
    resp = await gw.post(DOCS, headers=bearer(credential), files={"file": ("memo.txt", text, "text/plain")})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def analysed(gw: httpx.AsyncClient, credential: str, document_id: str, **body: object) -> dict:
    """Start an analysis and wait for its end; the analysis as finally read."""
    resp = await gw.post(f"{DOCS}/{document_id}/analyses", json={"kind": "summary", **body}, headers=bearer(credential))
    assert resp.status_code == 202, resp.text
    url = resp.headers["location"]

    async def read() -> dict:
        return (await gw.get(url, headers=bearer(credential))).json()

    return await eventually(
        read, lambda a: a["status"] in ("completed", "failed"), what="the analysis' end", timeout=30
    )


async def usage_of(gw: httpx.AsyncClient, token: str) -> dict:
    keys = (await gw.get("/api/v1/llm/usage", headers=bearer(token))).json()["keys"]
    return {row["key_id"]: row for row in keys}


async def test_an_analysis_started_with_a_key_is_the_keys_recorded_and_held_to_its_budget(
    keys_stack: Stack, fake_provider
) -> None:
    token = await new_access_token(keys_stack.url("gateway"), "analysis-key")
    made = await new_key(keys_stack, token)  # every scope, no budget of its own
    key = made["key"]
    fake_provider.behave("priced", text="The office moves on Friday.")
    async with httpx.AsyncClient(base_url=keys_stack.url("gateway"), timeout=30) as gw:
        document_id = await upload(gw, key)
        first = await analysed(gw, key, document_id, models=["priced"])
        assert first["status"] == "completed", first
        # The analysis' llm call is recorded under the key (and so reported to the key's spend).
        per_key = await eventually(
            lambda: usage_of(gw, token), lambda u: made["id"] in u, what="the analysis' call under the key"
        )
        assert per_key[made["id"]]["requests"] == 1 and per_key[made["id"]]["cost_usd"] > 0
        entry = await eventually(
            lambda: gw.get(KEYS, headers=bearer(token)),
            lambda r: r.json()["keys"][0]["spent_usd"] > 0,
            what="the key's spend in its list",
        )
        assert entry.json()["keys"][0]["id"] == made["id"]

        # A key whose budget the analysis may exceed: refused at the start (402, how much over),
        # before anything is queued or any provider call is made.
        tight = (await new_key(keys_stack, token, budget_usd=0.000001))["key"]
        calls = len(fake_provider.calls("priced"))
        resp = await gw.post(
            f"{DOCS}/{document_id}/analyses",
            json={"kind": "summary", "models": ["priced"], "fresh": True},
            headers=bearer(tight),
        )
        assert resp.status_code == 402, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert "budget" in resp.json()["detail"].lower() and resp.json()["over_by_usd"] > 0
        listed = await gw.get(f"{DOCS}/{document_id}/analyses", headers=bearer(tight))
        assert len(listed.json()) == 1  # the first analysis only
        assert len(fake_provider.calls("priced")) == calls
        # The owner's own token is not held to the key's budget.
        third = await analysed(gw, token, document_id, models=["priced"], fresh=True)
        assert third["status"] == "completed", third
        assert (await usage_of(gw, token))[made["id"]]["requests"] == 1
    assert key not in logs(keys_stack) and tight not in logs(keys_stack)


async def test_starting_an_analysis_with_a_key_needs_the_llm_scope(keys_stack: Stack, fake_provider) -> None:
    token = await new_access_token(keys_stack.url("gateway"), "analysis-scope")
    key = (await new_key(keys_stack, token, scopes=["documents:read", "documents:write"]))["key"]
    async with httpx.AsyncClient(timeout=30) as http:
        gw = httpx.AsyncClient(base_url=keys_stack.url("gateway"), timeout=30)
        async with gw:
            document_id = await upload(gw, key)
        for base in (keys_stack.url("gateway"), keys_stack.url("documents")):
            resp = await http.post(
                f"{base}{DOCS}/{document_id}/analyses",
                json={"kind": "summary", "models": ["alpha"]},
                headers=bearer(key),
            )
            assert resp.status_code == 403, resp.text
            assert resp.headers["content-type"].startswith("application/problem+json")
            assert "llm scope" in resp.json()["detail"]
            listed = await http.get(f"{base}{DOCS}/{document_id}/analyses", headers=bearer(key))
            assert listed.status_code == 200 and listed.json() == []
    assert fake_provider.calls("alpha") == []


async def service_token(stack: Stack) -> str:
    """A service token from documents to llm, as documents obtains one (the stack's development
    INTERNAL_TOKEN_SECRET)."""
    from shared.settings import DEV_INTERNAL_TOKEN_SECRET

    async with httpx.AsyncClient(base_url=stack.url("auth"), timeout=30) as client:
        resp = await client.post(
            "/api/v1/auth/service-token",
            json={"service": "documents", "audience": "llm"},
            headers=bearer(DEV_INTERNAL_TOKEN_SECRET),
        )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def user_of(token: str) -> str:
    import jwt

    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


async def test_only_a_service_acting_for_the_keys_user_can_name_a_key(keys_stack: Stack, fake_provider) -> None:
    owner = await new_access_token(keys_stack.url("gateway"), "key-owner")
    other = await new_access_token(keys_stack.url("gateway"), "key-other")
    made = await new_key(keys_stack, owner, scopes=["llm"], rpm=1)
    body = {"models": ["alpha"], "pattern": "parallel"}
    path = keys_stack.url("llm") + "/api/v1/llm/orchestrate"
    service = await service_token(keys_stack)
    async with (
        httpx.AsyncClient(timeout=30) as http,
        httpx.AsyncClient(base_url=keys_stack.url("gateway"), timeout=30) as gw,
    ):
        # A user's own token cannot claim a key: the header is not read, the call is the user's
        # (not counted under the key, not held to its rpm of 1).
        for credential in (owner, other):
            for _ in range(2):
                resp = await http.post(
                    path,
                    json={**body, "prompt": prompt()},
                    headers={**bearer(credential), "X-On-Behalf-Of": user_of(owner), "X-On-Behalf-Of-Key": made["id"]},
                )
                assert resp.status_code == 200, resp.text
        assert made["id"] not in await usage_of(gw, owner)
        assert made["id"] not in await usage_of(gw, other)

        # A service naming another user's key, or a malformed id: the 401 of an invalid key.
        for acting_for, key_id in (
            (user_of(other), made["id"]),
            (user_of(owner), "../../keys"),
            (user_of(owner), "a" * 12),
        ):
            resp = await http.post(
                path,
                json={**body, "prompt": prompt()},
                headers={**bearer(service), "X-On-Behalf-Of": acting_for, "X-On-Behalf-Of-Key": key_id},
            )
            assert resp.status_code == 401, resp.text
        # A service acting for the key's user: the call is the key's, held to its rpm.
        acting = {**bearer(service), "X-On-Behalf-Of": user_of(owner), "X-On-Behalf-Of-Key": made["id"]}
        assert (await http.post(path, json={**body, "prompt": prompt()}, headers=acting)).status_code == 200
        limited = await http.post(path, json={**body, "prompt": prompt()}, headers=acting)
        assert limited.status_code == 429 and "API key" in limited.json()["detail"]
        assert (await usage_of(gw, owner))[made["id"]]["requests"] == 1

        # Revoked: refused for the service too, like the key itself.
        assert (await gw.delete(f"{KEYS}/{made['id']}", headers=bearer(owner))).status_code == 204

        async def status() -> int:
            return (await http.post(path, json={**body, "prompt": prompt()}, headers=acting)).status_code

        await eventually(status, lambda s: s == 401, what="llm refusing the revoked key for a service", timeout=5)
