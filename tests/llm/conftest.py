"""Fixtures for the llm suite: auth + llm + gateway as real processes with LLM_MODELS_FILE pointing
at the fake provider (tests.conftest.fake_provider), so every call goes through the real litellm
path over HTTP."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from shared.db import Database
from shared.migrations import upgrade
from tests.conftest import running_stack, stack_env
from tests.fakes.openai_server import FakeOpenAI
from tests.support.users import new_access_token
from tools.stack import Stack
from ultrai_llm.main import MIGRATIONS
from ultrai_llm.settings import LlmSettings

# Every model the llm stack knows; each test uses its own, so the fake's behaviours do not collide.
MODELS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "sonic",  # answers at once; used by the cache tests
    "hang",  # never answers: a timeout
    "flaky",  # 500s
    "limited",  # 429s
    "brittle",  # a stream broken off midway
    "primary",  # fails; falls back to "backup"
    "backup",
    "reviewer-a",
    "reviewer-b",
    "reviewer-c",
    "writer",
    "stream-a",
    "stream-b",
    "sdk",
    "priced",  # has a price per token
    "ranker-a",  # the ranked pattern; ranker-a takes a JSON schema in response_format
    "ranker-b",
    "ranker-c",
    "ranker-d",
    "metered-a",  # priced, for the estimate
    "metered-b",
    "metered-w",
    "convo-a",  # conversations (test_conversations.py)
    "convo-b",
    "convo-w",
    "convo-narrow",  # a small context window: a conversation's oldest turns are dropped for it
]
PRICE_IN, PRICE_OUT = 0.000002, 0.000004
NARROW_WINDOW = 250  # convo-narrow's max_input_tokens
# The estimate's models: a price per token, an output limit (the estimate's default output).
METERED = {
    "metered-a": (0.0000011, 0.0000031),
    "metered-b": (0.0000023, 0.0000047),
    "metered-w": (0.0000005, 0.0000015),
}
METERED_MAX_OUTPUT = 300


def write_models_file(fake_provider: FakeOpenAI, path: Path, models: list[str]) -> Path:
    entries = []
    for name in models:
        entry = fake_provider.model_entry(name)
        if name == "priced":
            entry["model_info"] = {
                "input_cost_per_token": PRICE_IN,
                "output_cost_per_token": PRICE_OUT,
                "max_input_tokens": 2000,
                "max_output_tokens": 500,
            }
        if name == "convo-narrow":
            entry["model_info"] = {"max_input_tokens": NARROW_WINDOW}
        if name == "ranker-a":
            entry["model_info"] = {"supports_response_schema": True}
        if name in METERED:
            entry["model_info"] = {
                "input_cost_per_token": METERED[name][0],
                "output_cost_per_token": METERED[name][1],
                "max_output_tokens": METERED_MAX_OUTPUT,
            }
        entries.append(entry)
    path.write_text(json.dumps({"model_list": entries, "router_settings": {"fallbacks": [{"primary": ["backup"]}]}}))
    return path


def settings(**values) -> LlmSettings:
    """The llm service's settings for a test: provider keys unset explicitly, so the machine's
    environment does not leak into the test, and the demo models off unless a test is about them."""
    keys = {k: None for k in ("openai", "anthropic", "gemini", "groq", "mistral", "cohere", "deepseek", "openrouter")}
    return LlmSettings(**{**{f"{k}_api_key": v for k, v in keys.items()}, "llm_demo_models": False, **values})


@pytest.fixture(params=["sqlite", "postgres"])
async def migrated_db(request, tmp_dir: Path, pg_databases) -> AsyncIterator[Database]:
    """The service's database, migrated, on SQLite and (when TEST_DATABASE_URL is set) PostgreSQL."""
    values: dict[str, object] = {"data_dir": tmp_dir}
    if request.param == "postgres":
        if pg_databases is None:
            pytest.skip("TEST_DATABASE_URL is not set")
        values["database_url"] = await pg_databases.create("llm")
    config = settings(**values)
    await asyncio.to_thread(upgrade, MIGRATIONS, config, "llm")
    db = Database(config, "llm")
    yield db
    await db.dispose()


LLM_ENV = {
    "LLM_NUM_RETRIES": "1",
    "LLM_RETRY_AFTER": "0",
    "LLM_TIMEOUT": "5",
    # litellm's own backoff knobs: retries in tests wait milliseconds, not seconds.
    "INITIAL_RETRY_DELAY": "0.01",
    "JITTER": "0.01",
    "LLM_COOLDOWN_TIME": "1",
    "LLM_ALLOWED_FAILS": "100",
}


@pytest.fixture(scope="session")
async def llm_stack(pg_databases, redis_url, fake_provider: FakeOpenAI) -> AsyncIterator[Stack]:
    env = {**await stack_env(pg_databases, redis_url, "llm"), **LLM_ENV}

    def models(workdir: Path) -> dict[str, str]:
        return {"LLM_MODELS_FILE": str(write_models_file(fake_provider, workdir / "models.json", MODELS))}

    async with running_stack(env, names=("auth", "llm", "gateway"), files=models) as st:
        yield st


async def keys_fetched(llm_url: str, token: str, timeout: float = 20.0) -> None:
    """Wait until the llm service has auth's signing keys. Its first token check fetches them, with
    a 2 s limit (shared/tokens.py) that a heavily loaded machine can exceed (a 503 then)."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(base_url=llm_url, headers={"Authorization": f"Bearer {token}"}) as client:
        while (await client.get("/api/v1/llm/models")).status_code == 503:
            assert asyncio.get_running_loop().time() < deadline, "the llm service never got auth's keys"
            await asyncio.sleep(0.2)


@pytest.fixture(scope="session")
async def token(llm_stack: Stack) -> str:
    token = await new_access_token(llm_stack.url("gateway"), "llm")
    await keys_fetched(llm_stack.url("llm"), token)
    return token


@pytest.fixture
async def gateway(llm_stack: Stack, token: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=llm_stack.url("gateway"), headers=headers, timeout=30) as client:
        yield client


@pytest.fixture
async def llm(llm_stack: Stack, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client straight to the llm service (as the documents service calls it)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=llm_stack.url("llm"), headers=headers, timeout=30) as client:
        yield client


def unique(prompt: str = "What is the capital of France?") -> str:
    """A prompt no other test sends, so the cache never answers for another test."""
    return f"{prompt} ({uuid.uuid4().hex[:8]})"


def parse_sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        event, data = "message", None
        for line in block.splitlines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if data is not None:
            events.append((event, json.loads(data) if data != "[DONE]" else {"done": True}))
    return events
