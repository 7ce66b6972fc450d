"""Two llm instances sharing Redis keep a provider's requests-per-minute limit together: the limit
set on a model deployment (litellm's ``rpm``) counts the calls of every instance, so the provider
(the fake, which counts what it receives) never gets more than that in a minute."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import running_stack, stack_env
from tests.fakes.openai_server import FakeOpenAI
from tests.llm.conftest import LLM_ENV, keys_fetched, unique
from tests.support.users import new_access_token
from tools.stack import SERVICES, ServiceProcess, free_port

RPM = 3


async def _router_keys(redis_url: str, prefix: str) -> dict[str, bytes | None]:
    """The string keys litellm's Router keeps under ``prefix`` in Redis, with their values."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        keys = [k.decode() async for k in client.scan_iter(match=f"{prefix}:*")]
        return {k: await client.get(k) if await client.type(k) == b"string" else None for k in keys}
    finally:
        await client.aclose()


CALLS_PER_INSTANCE = 6


async def test_two_instances_stay_within_a_models_rpm_together(
    pg_databases, redis_url: str | None, fake_provider: FakeOpenAI
) -> None:
    if not redis_url:
        pytest.skip("instances share limits through Redis: TEST_REDIS_URL is not set")
    # Sharing is under test, not a loaded machine: Redis gets time to answer. (When it is busy or
    # slower than REDIS_TIMEOUT a call goes ahead uncounted, by design: provider_limits.py.)
    env = {**await stack_env(pg_databases, redis_url, "rpm"), **LLM_ENV, "ENABLE_CACHE": "false", "REDIS_TIMEOUT": "5"}

    def models(workdir: Path) -> dict[str, str]:
        path = workdir / "models.json"
        path.write_text(json.dumps({"model_list": [fake_provider.model_entry("metered", rpm=RPM)]}))
        return {"LLM_MODELS_FILE": str(path)}

    async with running_stack(env, names=("auth", "llm"), files=models) as stack:
        second = ServiceProcess(SERVICES["llm"], free_port(), env=dict(stack.env), log_path=stack.workdir / "llm-2.log")
        await asyncio.to_thread(lambda: second.start().wait_ready(timeout=60))
        try:
            token = await new_access_token(stack.url("auth"), "rpm")
            urls = [stack.url("llm"), second.url]
            for url in urls:
                await keys_fetched(url, token)
            headers = {"Authorization": f"Bearer {token}"}

            async def ask(client: httpx.AsyncClient) -> httpx.Response:
                body = {"model": "metered", "messages": [{"role": "user", "content": unique()}]}
                return await client.post("/v1/chat/completions", json=body)

            clients = [httpx.AsyncClient(base_url=url, headers=headers, timeout=30) for url in urls]
            try:
                answers = await asyncio.gather(*(ask(c) for c in clients for _ in range(CALLS_PER_INSTANCE)))
                prefix = f"{stack.env['REDIS_KEY_PREFIX']}:llm:router"
                router_state = await _router_keys(redis_url, prefix)
            finally:
                for c in clients:
                    await c.aclose()
        finally:
            second.stop()
    received = [r for r in fake_provider.requests if r.model == "metered"]
    assert len(received) == RPM, f"the provider got {len(received)} calls in a minute; the limit is {RPM}"
    assert sum(1 for a in answers if a.status_code == 200) == RPM, [a.status_code for a in answers]
    refused = [a for a in answers if a.status_code != 200]
    # litellm's own Router state is in Redis, where both instances read it: its count of the
    # deployment's requests this minute (both instances' calls). (Its failure count for cooldowns is
    # written there too, by a task of its own that a loaded machine can leave for later.)
    usage = [int(v or 0) for k, v in router_state.items() if k.startswith(f"{prefix}:global_router:") and ":rpm:" in k]
    assert sum(usage) == RPM, router_state
    assert all("rate limited" in a.text for a in refused), [(a.status_code, a.text[:200]) for a in refused]
