"""What a conversation's history costs the llm service before any provider call, in this process.

1. The plan (``Orchestrator.plan``) of a 3-model synthesis with a conversation of N earlier turns:
   for models whose context window takes the whole history (one token count per model), and for a
   model whose window (4096 tokens) takes only the latest turns (``conversations.latest_turns``:
   all tried once, then a binary search over how many of the latest fit).
2. The database side on SQLite (the embedded default): reading a conversation's history of N turns
   (``ConversationStore.history``) and storing a turn (``remember``).

The models are litellm's gpt-4o-mini (its real tokenizer) behind a models file; nothing is called.
Each turn: a prompt of some 40 tokens and an answer of some 200.
Usage: python bench/bench_conversation_history.py [repetitions]   (default 50)
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services" / "llm"))

from bench.bench_llm import pct  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50
TURNS = (0, 10, 50, 199)  # 199: the most a conversation holds before the next turn (MAX_TURNS 200)
PROMPT = "How does the notice period in clause {i} compare with the one in the previous contract we discussed?"
ANSWER = "The notice period in that clause is thirty days, counted from the written notice. " * 12


def history(turns: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for i in range(turns):
        messages += [{"role": "user", "content": PROMPT.format(i=i)}, {"role": "assistant", "content": ANSWER}]
    return messages


def models_file(workdir: Path) -> Path:
    entries = [
        {"model_name": name, "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": "http://127.0.0.1:9/v1"}}
        for name in ("wide-1", "wide-2", "wide-3")
    ]
    entries.append(
        {
            "model_name": "narrow",
            "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": "http://127.0.0.1:9/v1"},
            "model_info": {"max_input_tokens": 4096},
        }
    )
    path = workdir / "models.json"
    path.write_text(json.dumps({"model_list": entries}))
    return path


async def plans(workdir: Path) -> dict[str, list[float]]:
    from tests.llm.conftest import settings
    from ultrai_llm.cache import ResponseCache
    from ultrai_llm.catalog import build_catalog
    from ultrai_llm.engine import Engine
    from ultrai_llm.orchestrate import Orchestrator
    from ultrai_llm.schemas import OrchestrateRequest

    config = settings(llm_models_file=models_file(workdir))
    engine = Engine(config, build_catalog(config), ResponseCache(None, 1, enabled=False))  # type: ignore[arg-type]
    orchestrator = Orchestrator(engine, config, lambda *_: None)
    times: dict[str, list[float]] = {}
    for label, models in (
        ("3 wide models", ["wide-1", "wide-2", "wide-3"]),
        ("2 wide + 1 narrow", ["wide-1", "wide-2", "narrow"]),
    ):
        for turns in TURNS:
            earlier = history(turns)
            name = f"plan, {label}, {turns} turns"
            times[name] = []
            kept = None
            for i in range(N + 5):
                # A prompt of its own each time: litellm's counts are not remembered across plans.
                request = OrchestrateRequest.model_validate(
                    {"prompt": f"And clause {i}?", "models": models, "synthesis_model": "wide-1"}
                )
                started = time.perf_counter()
                plan = await orchestrator.plan(request, "bench", history=earlier)
                if i >= 5:
                    times[name].append((time.perf_counter() - started) * 1000)
                kept = (len(plan.models[-1].messages or []) - 1) // 2
            times[name + f" (last model kept {kept})"] = times.pop(name)
    return times


async def store(workdir: Path) -> dict[str, list[float]]:
    from sqlalchemy import create_engine

    from shared.db import Database
    from tests.llm.conftest import settings
    from ultrai_llm.conversations import ConversationStore
    from ultrai_llm.models import LlmBase

    config = settings(data_dir=workdir)
    LlmBase.metadata.create_all(create_engine(f"sqlite:///{workdir / 'llm.db'}"))
    db = Database(config, "llm")
    conversations = ConversationStore(db)
    answer = {
        "id": "0" * 32,
        "pattern": "synthesis",
        "status": "completed",
        "results": [],
        "synthesis": {"model": "wide-1", "status": "ok", "text": ANSWER},
        "usage": {"prompt_tokens": 100, "completion_tokens": 200, "cost_usd": 0.0},
    }
    times: dict[str, list[float]] = {"remember (store one turn)": []}
    full = await conversations.create("bench", "bench")
    for i in range(max(TURNS)):
        started = time.perf_counter()
        await conversations.remember("bench", full["id"], PROMPT.format(i=i), answer)
        times["remember (store one turn)"].append((time.perf_counter() - started) * 1000)
    for turns in TURNS:
        convo = await conversations.create("bench", None)
        for i in range(turns):
            await conversations.remember("bench", convo["id"], PROMPT.format(i=i), answer)
        name = f"history read, {turns} turns"
        times[name] = []
        for i in range(N + 5):
            started = time.perf_counter()
            await conversations.history("bench", convo["id"])
            if i >= 5:
                times[name].append((time.perf_counter() - started) * 1000)
    await db.dispose()
    return times


async def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="ultrai-bench-convo-"))
    try:
        planned = await plans(workdir)
        stored = await store(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"conversation history benchmark ({N} repetitions per case; gpt-4o-mini's tokenizer; no provider call)")
    for name, times in {**planned, **stored}.items():
        print(f"  {name:<60} p50 {statistics.median(times):7.2f} ms   p99 {pct(times, 0.99):7.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
