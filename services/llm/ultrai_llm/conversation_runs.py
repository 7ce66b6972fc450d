"""An orchestration within a conversation: planned with the conversation's earlier turns, and stored
as its next turn once it has answered. The HTTP route (JSON and SSE) and the WebSocket both run
orchestrations through these two functions."""

from __future__ import annotations

import logging
from typing import Any

from ultrai_llm.orchestrate import Plan
from ultrai_llm.schemas import OrchestrateRequest
from ultrai_llm.service import Llm
from ultrai_llm.streaming import Emit

log = logging.getLogger("ultrai_llm.conversations")


async def plan_turn(llm: Llm, body: OrchestrateRequest, user_id: str) -> Plan:
    """The plan, with the conversation's history when the body names one: 404 for an unknown or
    another user's conversation, before any provider call."""
    history = None
    if body.conversation_id is not None:
        history = await llm.conversations.history(user_id, body.conversation_id)
    return await llm.orchestrator.plan(body, user_id, history=history)


async def execute_turn(
    llm: Llm, plan: Plan, body: OrchestrateRequest, user_id: str, emit: Emit | None
) -> dict[str, Any]:
    """Run the plan; with a conversation, store the answer as its next turn and say so in the answer
    (``conversation``). A turn that cannot be stored does not take the answer away: it says
    ``stored: false``."""
    answer = await llm.orchestrator.execute(plan, emit)
    if body.conversation_id is None:
        return answer
    turn = None
    if not plan.cancelled:
        try:
            turn = await llm.conversations.remember(user_id, body.conversation_id, body.prompt, answer)
        except Exception as exc:  # the database is down: the user still gets what was paid for
            log.warning("conversation turn not stored (%s)", type(exc).__name__)
    answer["conversation"] = {"id": body.conversation_id, "stored": turn is not None, "turn": turn}
    return answer
