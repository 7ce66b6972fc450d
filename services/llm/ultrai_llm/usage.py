"""Usage per user and model, in this service's own table, and the optional per-user daily budgets.

Calls are recorded off the request path: ``record`` appends to a buffer that a background task
writes in batches (and that is written at shutdown), so a cache hit or an orchestration does not
wait on the database. Reads (``summary``, the budget check) count what is still buffered too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.context import current_request_id
from shared.db import Database
from shared.errors import ProblemError
from ultrai_llm.engine import CallResult
from ultrai_llm.repository import add_usage, spent_since, usage_per_model
from ultrai_llm.settings import LlmSettings

log = logging.getLogger("ultrai_llm.usage")


def start_of_day(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def add_buffered(per_model: dict[str, dict[str, Any]], buffered: list[dict[str, Any]]) -> None:
    """Count calls not yet written into the per-model entries of a summary."""
    for row in buffered:
        entry = per_model.setdefault(
            row["model"],
            {
                "model": row["model"],
                "requests": 0,
                "cached": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "cost_usd": 0.0,
            },
        )
        entry["requests"] += 1
        entry["cached"] += int(row["cached"])
        entry["prompt_tokens"] += row["prompt_tokens"]
        entry["completion_tokens"] += row["completion_tokens"]
        entry["cost_usd"] += row["cost_usd"]


class UsageStore:
    def __init__(self, db: Database, settings: LlmSettings, flush_interval: float = 1.0) -> None:
        self.db = db
        self.settings = settings
        self.flush_interval = flush_interval
        self._pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="llm-usage-writer")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    def record(self, user_id: str, endpoint: str, results: list[CallResult]) -> None:
        now = datetime.now(UTC)
        rid = current_request_id()
        for r in results:
            if not r.ok and not (r.prompt_tokens or r.completion_tokens):
                continue  # a call that failed before any token was spent costs nothing
            self._pending.append(
                {
                    "user_id": user_id,
                    "model": r.model,
                    "stage": r.stage,
                    "endpoint": endpoint,
                    "prompt_tokens": r.prompt_tokens,
                    "completion_tokens": r.completion_tokens,
                    "cost_usd": 0.0 if r.cached else r.cost_usd,
                    "cached": r.cached,
                    "ok": r.ok,
                    "request_id": rid,
                    "created_at": now,
                }
            )
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # the database is down: keep the rows and try again later
                log.warning("usage not written yet (%s); retrying", type(exc).__name__)
            await asyncio.sleep(self.flush_interval)
            if self._pending:
                self._wake.set()

    async def flush(self) -> None:
        async with self._lock:
            if not self._pending:
                return
            rows, self._pending = self._pending, []
            try:
                async with self.db.sessions() as session:
                    await add_usage(session, rows)
            except BaseException:
                self._pending[:0] = rows
                raise

    def _buffered(self, user_id: str, since: datetime) -> list[dict[str, Any]]:
        return [r for r in self._pending if r["user_id"] == user_id and r["created_at"] >= since]

    async def summary(self, user_id: str, since: datetime) -> dict[str, Any]:
        """Requests, tokens and cost per model since ``since``, and their totals."""
        # Under the flush lock: a batch is either still buffered or already in the table, never
        # neither nor both while we read.
        async with self._lock, self.db.sessions() as session:
            stored = await usage_per_model(session, user_id, since)
            buffered = self._buffered(user_id, since)
        per_model = {entry["model"]: entry for entry in stored}
        add_buffered(per_model, buffered)
        models = sorted(per_model.values(), key=lambda e: e["model"])
        for entry in models:
            entry["cost_usd"] = round(entry["cost_usd"], 8)
        total = {
            "prompt_tokens": sum(e["prompt_tokens"] for e in models),
            "completion_tokens": sum(e["completion_tokens"] for e in models),
            "cost_usd": round(sum(e["cost_usd"] for e in models), 8),
        }
        return {"models": models, "total": total}

    async def spent_today(self, user_id: str) -> tuple[float, int]:
        since = start_of_day(datetime.now(UTC))
        async with self._lock, self.db.sessions() as session:
            stored_cost, stored_tokens = await spent_since(session, user_id, since)
            buffered = self._buffered(user_id, since)
        cost = float(stored_cost or 0.0) + sum(r["cost_usd"] for r in buffered)
        tokens = int(stored_tokens or 0) + sum(r["prompt_tokens"] + r["completion_tokens"] for r in buffered)
        return cost, tokens

    def budget(self) -> dict[str, Any]:
        return {
            "usd_per_day": self.settings.llm_budget_usd_per_day,
            "tokens_per_day": self.settings.llm_budget_tokens_per_day,
        }

    async def check_budget(self, user_id: str) -> None:
        """Refuse when the user's daily budget is spent: 402 for cost, 429 for tokens."""
        usd, tokens = self.settings.llm_budget_usd_per_day, self.settings.llm_budget_tokens_per_day
        if usd is None and tokens is None:
            return
        cost, used = await self.spent_today(user_id)
        now = datetime.now(UTC)
        retry = str(int((start_of_day(now) + timedelta(days=1) - now).total_seconds()) + 1)
        if usd is not None and cost >= usd:
            detail = f"Your daily LLM budget of ${usd:g} is spent (${cost:.4f} used); it renews at 00:00 UTC."
            raise ProblemError(402, detail, title="Budget spent", headers={"Retry-After": retry})
        if tokens is not None and used >= tokens:
            detail = f"Your daily allowance of {tokens} tokens is spent ({used} used); it renews at 00:00 UTC."
            raise ProblemError(429, detail, title="Token allowance spent", headers={"Retry-After": retry})
