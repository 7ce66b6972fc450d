"""Conversations: a user's orchestrations stored as the turns of a conversation, and each turn's
history sent again to the models of the next one.

A conversation belongs to one user; for anyone else it does not exist (404, never 403). A turn is
the user's prompt and the orchestration's final answer: the synthesis, or, for a pattern without
one, each model's final answer (a peer review's revision replaces the model's first answer). It is
stored when the orchestration has answered (``completed`` or ``partial``); a run refused, failed
before any answer, or cancelled leaves the conversation as it was.

The history a model receives (``history_messages``): each earlier turn as a user message (its
prompt) and an assistant message (its answer; several answers labelled "Answer A", "Answer B"...),
oldest first, before the new question. The orchestrator drops the oldest turns first when they do
not fit the model's context window (``Orchestrator._fit``).

Every read and write of the conversation tables is here. Bounds: ``MAX_TITLE_CHARS`` per title,
``MAX_TURNS`` per conversation (409 beyond) and ``MAX_CONVERSATIONS`` per user (403 beyond).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import Database
from shared.errors import ProblemError
from ultrai_llm.engine import Messages
from ultrai_llm.models import Conversation, ConversationTurn
from ultrai_llm.prompts import labelled

MAX_TITLE_CHARS = 200
MAX_TURNS = 200
MAX_CONVERSATIONS = 1000
NOT_FOUND = "No such conversation."


def not_found() -> ProblemError:
    return ProblemError(404, NOT_FOUND, title="Not found")


def encode_cursor(conversation: Conversation) -> str:
    raw = f"{conversation.created_at.isoformat()}|{conversation.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, conversation_id = raw.split("|", 1)
        return datetime.fromisoformat(stamp), conversation_id
    except (ValueError, UnicodeDecodeError):
        raise ProblemError(400, "The cursor is not valid; start again from the first page.") from None


def answer_text(answers: list[dict[str, Any]]) -> str:
    """A turn's answer as the models see it again: the one answer, or the answers labelled."""
    texts = [str(a.get("text") or "") for a in answers]
    return texts[0] if len(texts) == 1 else labelled(texts)


def final_answers(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The orchestration's final answer: the synthesis when it succeeded, else each model's last
    good answer (a review replaces the model's first answer), in the order the models answered."""
    synthesis = answer.get("synthesis")
    if synthesis and synthesis["status"] == "ok":
        return [{"model": synthesis["model"], "text": synthesis["text"] or ""}]
    finals: dict[str, str] = {}
    for result in answer["results"]:
        if result["status"] == "ok" and result["stage"] in ("answer", "review"):
            finals[result["model"]] = result["text"] or ""
    return [{"model": m, "text": t} for m, t in finals.items()]


async def latest_turns(
    history: Messages, needs: Callable[[Messages], Awaitable[int | None]]
) -> tuple[Messages, int | None]:
    """The most recent turns of ``history`` (pairs of messages, oldest first) that fit: the oldest
    dropped first. ``needs(earlier)`` says how many tokens the messages with ``earlier`` before the
    question need when they do not fit (None when they do). Returns the turns kept, and what the
    question alone needs when even it does not fit (None otherwise).

    All of them are tried first (what fits is counted once); then a binary search over how many of
    the latest fit, so a long conversation costs a few counts, not one per turn."""
    total = len(history) // 2
    needed = await needs(history)
    if needed is None or total == 0:
        return history, needed
    needed = await needs([])
    if needed is not None:
        return [], needed
    fits, too_many = 0, total  # fits: a number of latest turns that fits; too_many: one that does not
    while too_many - fits > 1:
        middle = (fits + too_many) // 2
        if await needs(history[len(history) - 2 * middle :]) is None:
            fits = middle
        else:
            too_many = middle
    return (history[len(history) - 2 * fits :] if fits else []), None


def history_messages(turns: list[ConversationTurn]) -> Messages:
    """The turns as prior messages, oldest first: user (the prompt), assistant (the answer)."""
    messages: Messages = []
    for turn in turns:
        messages.append({"role": "user", "content": turn.prompt})
        messages.append({"role": "assistant", "content": answer_text(turn.answers)})
    return messages


def conversation_out(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "title": conversation.title,
        "turns": conversation.turns,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
    }


def turn_out(turn: ConversationTurn) -> dict[str, Any]:
    return {
        "seq": turn.seq,
        "orchestration_id": turn.orchestration_id,
        "pattern": turn.pattern,
        "prompt": turn.prompt,
        "answers": turn.answers,
        "status": turn.status,
        "usage": {
            "prompt_tokens": turn.prompt_tokens,
            "completion_tokens": turn.completion_tokens,
            "cost_usd": turn.cost_usd,
        },
        "created_at": turn.created_at.isoformat(),
    }


def clean_title(title: str | None) -> str | None:
    """A title stripped; None when blank."""
    stripped = (title or "").strip()
    return stripped or None


@dataclass
class ConversationStore:
    db: Database

    async def create(self, user_id: str, title: str | None) -> dict[str, Any]:
        now = datetime.now(UTC)
        conversation = Conversation(
            id=uuid.uuid4().hex, user_id=user_id, title=clean_title(title), turns=0, created_at=now, updated_at=now
        )
        async with self.db.sessions() as session:
            count = await session.scalar(select(func.count()).where(Conversation.user_id == user_id))
            if (count or 0) >= MAX_CONVERSATIONS:
                raise ProblemError(
                    403, f"You have reached the limit of {MAX_CONVERSATIONS} conversations; delete some first."
                )
            session.add(conversation)
            await session.commit()
        return conversation_out(conversation)

    async def page(self, user_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
        """Up to ``limit`` conversations, newest first, after ``cursor``; and the next page's cursor."""
        query = select(Conversation).where(Conversation.user_id == user_id)
        if cursor:
            stamp, after = decode_cursor(cursor)
            query = query.where(
                or_(Conversation.created_at < stamp, and_(Conversation.created_at == stamp, Conversation.id < after))
            )
        query = query.order_by(Conversation.created_at.desc(), Conversation.id.desc()).limit(limit + 1)
        async with self.db.sessions() as session:
            rows = list((await session.scalars(query)).all())
        next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
        return {"items": [conversation_out(c) for c in rows[:limit]], "next_cursor": next_cursor}

    async def _owned(self, session: AsyncSession, user_id: str, conversation_id: str) -> Conversation:
        conversation = await session.get(Conversation, conversation_id)
        if conversation is None or conversation.user_id != user_id:
            raise not_found()
        return conversation

    async def get(self, user_id: str, conversation_id: str) -> dict[str, Any]:
        """The conversation with its turns, oldest first."""
        async with self.db.sessions() as session:
            conversation = await self._owned(session, user_id, conversation_id)
            turns = await self._turns(session, conversation_id)
        return {**conversation_out(conversation), "items": [turn_out(t) for t in turns]}

    async def rename(self, user_id: str, conversation_id: str, title: str | None) -> dict[str, Any]:
        async with self.db.sessions() as session:
            conversation = await self._owned(session, user_id, conversation_id)
            conversation.title = clean_title(title)
            conversation.updated_at = datetime.now(UTC)
            await session.commit()
        return conversation_out(conversation)

    async def delete(self, user_id: str, conversation_id: str) -> None:
        async with self.db.sessions() as session:
            await self._owned(session, user_id, conversation_id)
            await session.execute(delete(ConversationTurn).where(ConversationTurn.conversation_id == conversation_id))
            await session.execute(delete(Conversation).where(Conversation.id == conversation_id))
            await session.commit()

    async def erase(self, user_ids: list[str]) -> None:
        """Delete every conversation of these users (deleted accounts) with its turns."""
        async with self.db.sessions() as session:
            owned = select(Conversation.id).where(Conversation.user_id.in_(user_ids))
            await session.execute(delete(ConversationTurn).where(ConversationTurn.conversation_id.in_(owned)))
            await session.execute(delete(Conversation).where(Conversation.user_id.in_(user_ids)))
            await session.commit()

    async def history(self, user_id: str, conversation_id: str) -> Messages:
        """The earlier turns as messages, for the next orchestration: 404 for another user's or an
        unknown conversation, 409 when it is full (it would not take the new turn)."""
        async with self.db.sessions() as session:
            conversation = await self._owned(session, user_id, conversation_id)
            if conversation.turns >= MAX_TURNS:
                raise ProblemError(
                    409, f"The conversation has reached {MAX_TURNS} turns; start a new one.", title="Conversation full"
                )
            return history_messages(await self._turns(session, conversation_id))

    async def remember(self, user_id: str, conversation_id: str, prompt: str, answer: dict[str, Any]) -> int | None:
        """Store an orchestration's answer as the conversation's next turn, when it answered
        (``completed`` or ``partial`` with an answer); the turn's number, or None when nothing was
        stored (a conversation deleted meanwhile stores nothing)."""
        answers = final_answers(answer)
        if answer.get("status") not in ("completed", "partial") or not answers:
            return None
        now = datetime.now(UTC)
        usage = answer["usage"]
        async with self.db.sessions() as session:
            # The row is locked (PostgreSQL) while its count moves, so two runs at once take two seqs.
            bumped = await session.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id, Conversation.user_id == user_id)
                .values(turns=Conversation.turns + 1, updated_at=now)
                .returning(Conversation.turns)
            )
            seq = bumped.scalar_one_or_none()
            if seq is None:
                return None
            session.add(
                ConversationTurn(
                    conversation_id=conversation_id,
                    seq=seq,
                    orchestration_id=answer["id"],
                    pattern=answer["pattern"],
                    prompt=prompt,
                    answers=answers,
                    status=answer["status"],
                    prompt_tokens=usage["prompt_tokens"],
                    completion_tokens=usage["completion_tokens"],
                    cost_usd=usage["cost_usd"],
                    created_at=now,
                )
            )
            await session.commit()
        return int(seq)

    @staticmethod
    async def _turns(session: AsyncSession, conversation_id: str) -> list[ConversationTurn]:
        query = (
            select(ConversationTurn)
            .where(ConversationTurn.conversation_id == conversation_id)
            .order_by(ConversationTurn.seq)
        )
        return list((await session.scalars(query)).all())
