"""The llm service's application: orchestration on litellm, an OpenAI-compatible API, cache, usage."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from shared.app import create_app
from shared.health import Check, CheckResult
from shared.settings import load_settings
from shared.tokens import TokenVerifier
from ultrai_llm.api import PREFIX, Llm, model_statuses
from ultrai_llm.api import router as api_router
from ultrai_llm.cache import ResponseCache
from ultrai_llm.catalog import NO_PROVIDER_HINT, Catalog, CatalogError, build_catalog
from ultrai_llm.engine import Engine
from ultrai_llm.openai_api import router as openai_router
from ultrai_llm.orchestrate import Orchestrator
from ultrai_llm.settings import LlmSettings
from ultrai_llm.usage import UsageStore

SERVICE = "llm"
MIGRATIONS = Path(__file__).parent / "migrations"
DIRECTORY = {
    PREFIX: "this directory",
    f"{PREFIX}/models": "GET: the configured models with provider, status and context window",
    f"{PREFIX}/orchestrate": "POST: one prompt to several models (parallel, peer_review, synthesis); SSE with stream",
    f"{PREFIX}/usage": "GET: your tokens and cost per model, and your budget",
    "/v1/chat/completions": "POST: OpenAI-compatible chat completions (virtual models ultrai/<pattern>)",
    "/v1/models": "GET: OpenAI-compatible model list",
}


def load_catalog(settings: LlmSettings) -> Catalog:
    try:
        return build_catalog(settings)
    except (CatalogError, OSError) as exc:
        print(f"{SERVICE}: invalid setting: LLM_MODELS_FILE: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def providers_check(llm: Llm) -> Check:
    """No provider configured, or models that litellm has cooled down after failures: ``warn``.
    No provider is called: their state is what the calls themselves have shown."""
    catalog = llm.engine.catalog

    async def probe() -> CheckResult:
        if catalog.empty:
            return CheckResult("warn", NO_PROVIDER_HINT)
        providers = sorted({s.provider for s in catalog.specs.values()})
        extra = {"models": len(catalog.specs), "providers": providers}
        cooling = [m["name"] for m in await model_statuses(llm) if m["status"] == "cooling_down"]
        if cooling:
            return CheckResult("warn", f"cooling down after failures: {', '.join(cooling)}", extra)
        return CheckResult("pass", None, extra)

    # Never part of readiness: an external provider's state must not take this service out of rotation.
    return Check("providers", probe, component_type="component", critical=False, readiness=False)


def build(settings: LlmSettings | None = None) -> FastAPI:
    settings = settings or load_settings(LlmSettings, SERVICE)
    catalog = load_catalog(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = Engine(settings, catalog, ResponseCache(app.state.kv, settings.cache_ttl, settings.enable_cache))
        usage = UsageStore(app.state.db, settings)
        usage.start()
        warm_up = asyncio.create_task(engine.warm_up())
        app.state.llm = Llm(engine, Orchestrator(engine, settings, usage.record), usage)
        app.state.verifier = TokenVerifier(settings, SERVICE)
        app.state.verifier.start()
        app.state.health.add(providers_check(app.state.llm))
        try:
            yield
        finally:
            warm_up.cancel()
            await usage.close()
            await app.state.verifier.aclose()

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
    app.include_router(api_router)
    app.include_router(openai_router)

    return app


app = build()
