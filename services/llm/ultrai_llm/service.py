"""What the routes use, built once in the lifespan: the engine, the orchestrator, the usage store and
the conversations;
and the health check on the providers behind them."""

from __future__ import annotations

from dataclasses import dataclass

from shared.health import Check, CheckResult
from ultrai_llm.catalog import DEMO_ONLY_HINT, NO_PROVIDER_HINT
from ultrai_llm.conversations import ConversationStore
from ultrai_llm.engine import Engine
from ultrai_llm.orchestrate import Orchestrator
from ultrai_llm.usage import UsageStore


@dataclass
class Llm:
    """The service's facade, at ``app.state.llm`` (the routes get it through ``deps.LlmDep``)."""

    engine: Engine
    orchestrator: Orchestrator
    usage: UsageStore
    conversations: ConversationStore

    async def erase_accounts(self, user_ids: list[str]) -> None:
        """Everything held of these users (deleted accounts): their usage, buffered and written,
        their conversations, and their cached answers."""
        await self.usage.erase(user_ids)
        await self.conversations.erase(user_ids)
        await self.engine.cache.erase(user_ids)


def providers_check(llm: Llm) -> Check:
    """No provider configured, only the demo models, or models that litellm has cooled down after
    failures: ``warn``.
    No provider is called: their state is what the calls themselves have shown."""
    engine = llm.engine
    catalog = engine.catalog

    async def probe() -> CheckResult:
        if catalog.empty:
            return CheckResult("warn", NO_PROVIDER_HINT)
        providers = sorted({s.provider for s in catalog.specs.values()})
        extra = {"models": len(catalog.specs), "providers": providers}
        if catalog.demo_only:
            return CheckResult("warn", DEMO_ONLY_HINT, extra)
        cooling = [m["name"] for m in await engine.model_statuses() if m["status"] == "cooling_down"]
        if cooling:
            return CheckResult("warn", f"cooling down after failures: {', '.join(cooling)}", extra)
        return CheckResult("pass", None, extra)

    # Never part of readiness: an external provider's state must not take this service out of rotation.
    return Check("providers", probe, component_type="component", critical=False, readiness=False)
