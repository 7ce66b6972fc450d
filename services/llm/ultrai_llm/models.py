"""Tables owned by the llm service (its own schema on PostgreSQL): usage, and conversations with
their turns (``ultrai_llm.conversations``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class LlmBase(DeclarativeBase):
    """This service's own registry and metadata: its tables only, whatever else is imported."""


class UsageRecord(LlmBase):
    """One model call made for a user: its tokens and cost (0 when answered from the cache)."""

    __tablename__ = "llm_usage"
    __table_args__ = (
        Index("ix_llm_usage_user_created", "user_id", "created_at"),
        Index("ix_llm_usage_key_created", "key_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    stage: Mapped[str] = mapped_column(String(16))
    endpoint: Mapped[str] = mapped_column(String(16))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    ok: Mapped[bool] = mapped_column(Boolean, default=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The API key the call was made with (None: an access token or a service for the user).
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)


class Conversation(LlmBase):
    """A user's stored conversation: the orchestrations that name it are its turns."""

    __tablename__ = "llm_conversations"
    __table_args__ = (Index("ix_llm_conversations_user_created", "user_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64))
    title: Mapped[str | None] = mapped_column(String(200), nullable=True)
    turns: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConversationTurn(LlmBase):
    """One orchestration of a conversation: the user's prompt and its final answer (the synthesis,
    or each model's answer for a pattern without one)."""

    __tablename__ = "llm_conversation_turns"

    conversation_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("llm_conversations.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    orchestration_id: Mapped[str] = mapped_column(String(32))
    pattern: Mapped[str] = mapped_column(String(32))
    prompt: Mapped[str] = mapped_column(Text)
    # [{"model": ..., "text": ...}]: the synthesis alone, or each model's final answer.
    answers: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
