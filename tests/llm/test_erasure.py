"""What the llm service erases of a deleted account: its usage (written and still buffered), its
conversations with their turns and its cached answers, and nothing of anyone else's; on SQLite and
on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select

from shared.db import Database
from shared.kv import KeyValue
from tests.llm.conftest import settings
from tests.llm.test_usage_daily import row
from ultrai_llm.cache import ResponseCache
from ultrai_llm.catalog import build_catalog
from ultrai_llm.conversations import ConversationStore
from ultrai_llm.engine import Engine
from ultrai_llm.models import Conversation, ConversationTurn, UsageRecord
from ultrai_llm.repository import add_usage
from ultrai_llm.schemas import ModelParams
from ultrai_llm.service import Llm
from ultrai_llm.usage import UsageStore


def answered(prompt: str) -> dict:
    """An orchestration's answer as the conversation stores it."""
    result = {"model": "alpha", "stage": "answer", "status": "ok", "text": f"about {prompt}"}
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "cost_usd": 0.0}
    return {"id": "o" * 32, "pattern": "parallel", "status": "completed", "results": [result], "usage": usage}


async def held(db: Database, user: str) -> dict[str, int]:
    conversations = select(Conversation.id).where(Conversation.user_id == user)
    queries = {
        "usage": select(func.count()).where(UsageRecord.user_id == user),
        "conversations": select(func.count()).where(Conversation.user_id == user),
        "turns": select(func.count()).where(ConversationTurn.conversation_id.in_(conversations)),
    }
    async with db.sessions() as session:
        return {name: int(await session.scalar(query) or 0) for name, query in queries.items()}


async def test_erasing_a_user_leaves_nothing_of_theirs_and_all_of_the_others(migrated_db: Database) -> None:
    db = migrated_db
    config = settings(llm_demo_models=True)
    usage = UsageStore(db, config)
    conversations = ConversationStore(db)
    engine = Engine(config, build_catalog(config), ResponseCache(KeyValue(None, service="llm-test"), 60))
    # The facade's erase uses its usage, conversations and the engine's cache (no orchestrator).
    llm = Llm(engine=engine, orchestrator=None, usage=usage, conversations=conversations)  # type: ignore[arg-type]
    model = next(iter(engine.catalog.specs))
    question = [{"role": "user", "content": "What does the document say? It says hello."}]

    async def cached(user: str) -> bool:
        return (await engine.call(model, question, ModelParams(), stage="answer", scope=user)).cached

    for user in ("gone", "kept"):
        assert not await cached(user)
        assert await cached(user)  # answered from the cache the second time
    now = datetime.now(UTC)
    async with db.sessions() as session:
        await add_usage(session, [row(user, "alpha", now, 10, 5, 0.01) for user in ("gone", "kept", "gone")])
    for user in ("gone", "kept"):
        for n in range(2):
            made = await conversations.create(user, f"{user} {n}")
            assert await conversations.remember(user, made["id"], "a question", answered(user)) == 1
    # A call of each recorded but not yet written: the buffer is the user's data too.
    usage._pending += [row("gone", "alpha", now, 1, 1, 0.0), row("kept", "alpha", now, 1, 1, 0.0)]

    kept_before = await held(db, "kept")
    assert kept_before == {"usage": 1, "conversations": 2, "turns": 2}
    await llm.erase_accounts(["gone"])
    await usage.flush()  # what was buffered is written now: nothing of the erased user
    assert await held(db, "gone") == {"usage": 0, "conversations": 0, "turns": 0}
    assert await held(db, "kept") == {**kept_before, "usage": 2}
    assert not await cached("gone")  # its cached answer went with it
    assert await cached("kept")
    await llm.erase_accounts(["gone"])  # listed again: nothing left to find
    assert await held(db, "kept") == {**kept_before, "usage": 2}
