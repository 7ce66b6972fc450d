"""The llm service's application: orchestration on litellm, an OpenAI-compatible API, cache, usage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from shared.app import create_app
from shared.erasure import ErasureSweeper
from shared.ratelimit import RateLimiter
from shared.settings import load_settings
from shared.tokens import TokenVerifier
from ultrai_llm.cache import ResponseCache
from ultrai_llm.catalog import load_catalog
from ultrai_llm.conversations import ConversationStore
from ultrai_llm.engine import Engine
from ultrai_llm.orchestrate import Orchestrator
from ultrai_llm.routes import PREFIX, conversations, models, openai, orchestrate, usage
from ultrai_llm.service import Llm, providers_check
from ultrai_llm.settings import LlmSettings
from ultrai_llm.usage import UsageStore

SERVICE = "llm"
MIGRATIONS = Path(__file__).parent / "migrations"
DIRECTORY = {
    PREFIX: "this directory",
    f"{PREFIX}/models": "GET: the configured models with provider, status, context window and demo flag",
    f"{PREFIX}/orchestrate": "POST: one prompt to several models (parallel, peer_review, synthesis); SSE with stream",
    f"{PREFIX}/orchestrate/ws": "WebSocket: the same as JSON messages, cancellable; the token in the first",
    f"{PREFIX}/conversations": "GET, POST: your stored conversations (newest first), a new one",
    f"{PREFIX}/conversations/{{id}}": "GET, PATCH, DELETE: a conversation with its turns; rename; delete",
    f"{PREFIX}/usage": "GET: your tokens and cost per model, per API key and per day, and your budget",
    "/v1/chat/completions": "POST: OpenAI-compatible chat completions (virtual models ultrai/<pattern>)",
    "/v1/models": "GET: OpenAI-compatible model list",
}


def build(settings: LlmSettings | None = None) -> FastAPI:
    settings = settings or load_settings(LlmSettings, SERVICE)
    catalog = load_catalog(settings, SERVICE)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limiter = RateLimiter.for_settings(settings, SERVICE)
        cache = ResponseCache(app.state.kv, settings.cache_ttl, settings.enable_cache)
        engine = Engine(settings, catalog, cache, limiter)
        app.state.verifier = verifier = TokenVerifier(settings, SERVICE)
        verifier.start()
        report = verifier.keys.report_spend if verifier.keys is not None else None
        usage_store = UsageStore(app.state.db, settings, limiter=limiter, report=report)
        usage_store.start()
        warm_up = asyncio.create_task(engine.warm_up())
        orchestrator = Orchestrator(engine, settings, usage_store.record)
        app.state.llm = Llm(engine, orchestrator, usage_store, ConversationStore(app.state.db))
        app.state.health.add(providers_check(app.state.llm))
        # The usage and conversations of accounts auth has deleted (shared/erasure.py).
        app.state.erasures = erasures = ErasureSweeper(settings, SERVICE, app.state.llm.erase_accounts)
        erasures.start()
        try:
            yield
        finally:
            await erasures.aclose()
            warm_up.cancel()
            await usage_store.close()
            await limiter.close()
            await verifier.aclose()

    app = create_app(
        SERVICE,
        settings,
        description="Multi-model orchestration on litellm, an OpenAI-compatible API, a response cache and usage.",
        directory=DIRECTORY,
        api_prefix=PREFIX,
        lifespan=lifespan,
        migrations=MIGRATIONS,
        max_body_size=2 * settings.llm_max_prompt_chars + 65_536,
    )
    for routes in (models, orchestrate, conversations, usage, openai):
        app.include_router(routes.router)
    return app


app = build()
