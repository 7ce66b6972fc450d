"""Request and response bodies of the conversation routes (``routes/conversations.py``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ultrai_llm.conversations import MAX_TITLE_CHARS
from ultrai_llm.schemas import Pattern, UsageTotals


class ConversationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(None, max_length=MAX_TITLE_CHARS, description="Blank or absent: untitled")


class ConversationRename(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(max_length=MAX_TITLE_CHARS, description="Blank or null: untitled")


class ConversationOut(BaseModel):
    id: str
    title: str | None
    turns: int = Field(description="How many turns are stored")
    created_at: str
    updated_at: str


class ConversationPage(BaseModel):
    items: list[ConversationOut] = Field(description="Newest first")
    next_cursor: str | None = Field(description="The next page's cursor; null on the last page")


class TurnAnswer(BaseModel):
    model: str
    text: str


class TurnOut(BaseModel):
    seq: int = Field(description="1 for the first turn")
    orchestration_id: str
    pattern: Pattern
    prompt: str
    answers: list[TurnAnswer] = Field(
        description="The synthesis alone, or (a pattern without one, or a failed synthesis) each model's final answer"
    )
    status: str = Field(description="completed or partial")
    usage: UsageTotals
    created_at: str


class ConversationDetail(ConversationOut):
    items: list[TurnOut] = Field(description="The turns, oldest first")
