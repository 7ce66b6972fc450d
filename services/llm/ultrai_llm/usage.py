"""Usage per user and model, in this service's own table, and the optional per-user daily budgets.

Calls are recorded off the request path: ``record`` appends to a buffer that a background task
writes in batches (and that is written at shutdown), so a cache hit or an orchestration does not
wait on the database. Reads (``summary``, the budget check) count what is still buffered too.

A call made with an API key is recorded with the key's id; its limits (``key_limits``) are checked
with the user's budget, and what each key spent is reported to auth (its key list shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.apikeys import KeyGrant, current_key
from shared.context import current_request_id
from shared.db import Database
from shared.errors import ProblemError
from shared.ratelimit import RateLimiter
from ultrai_llm.engine import CallResult
from ultrai_llm.key_limits import check_rpm, check_spent
from ultrai_llm.repository import (
    add_usage,
    erase_usage,
    key_spent_since,
    spent_since,
    usage_per_day,
    usage_per_key,
    usage_per_model,
)
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
    def __init__(
        self,
        db: Database,
        settings: LlmSettings,
        flush_interval: float = 1.0,
        *,
        limiter: RateLimiter | None = None,
        report: Callable[[dict[str, float]], Awaitable[None]] | None = None,
    ) -> None:
        self.limiter = limiter
        self.report = report
        self._unreported: dict[str, float] = {}
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
        key = current_key.get()
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
                    "key_id": key.key_id if key is not None else None,
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
            for row in rows:
                if row["key_id"] is not None:
                    self._unreported[row["key_id"]] = self._unreported.get(row["key_id"], 0.0) + row["cost_usd"]
        await self._report()

    async def erase(self, user_ids: list[str]) -> None:
        """Forget every call of these users (deleted accounts), buffered or written. A flush in
        progress ends first, so none of their calls is written after this."""
        gone = set(user_ids)
        async with self._lock:
            self._pending = [row for row in self._pending if row["user_id"] not in gone]
            async with self.db.sessions() as session:
                await erase_usage(session, user_ids)
                await session.commit()

    async def _report(self) -> None:
        """What keys spent, to auth; kept and sent again with the next batch when auth cannot take it."""
        if self.report is None or not self._unreported:
            return
        spend, self._unreported = self._unreported, {}
        try:
            await self.report(spend)
        except Exception as exc:
            log.warning("key spend not reported yet (%s); retrying", type(exc).__name__)
            for key_id, cost in spend.items():
                self._unreported[key_id] = self._unreported.get(key_id, 0.0) + cost

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
        return {
            "models": models,
            "total": total,
            "keys": await self._per_key(user_id, since),
            "daily": await self._per_day(user_id, since),
        }

    async def _per_key(self, user_id: str, since: datetime) -> list[dict[str, Any]]:
        async with self._lock, self.db.sessions() as session:
            stored = await usage_per_key(session, user_id, since)
            buffered = self._buffered(user_id, since)
        per_key = {entry["key_id"]: entry for entry in stored}
        for row in buffered:
            entry = per_key.setdefault(
                row["key_id"],
                {"key_id": row["key_id"], "requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0},
            )
            entry["requests"] += 1
            entry["prompt_tokens"] += row["prompt_tokens"]
            entry["completion_tokens"] += row["completion_tokens"]
            entry["cost_usd"] += row["cost_usd"]
        for entry in per_key.values():
            entry["cost_usd"] = round(entry["cost_usd"], 8)
        return sorted(per_key.values(), key=lambda e: e["key_id"] or "")

    async def _per_day(self, user_id: str, since: datetime) -> list[dict[str, Any]]:
        """Requests, tokens and cost per UTC day and model, oldest day first."""
        async with self._lock, self.db.sessions() as session:
            stored = await usage_per_day(session, user_id, since)
            buffered = self._buffered(user_id, since)
        per_day = {(entry["day"], entry["model"]): entry for entry in stored}
        for row in buffered:
            day = row["created_at"].astimezone(UTC).strftime("%Y-%m-%d")
            entry = per_day.setdefault(
                (day, row["model"]),
                {
                    "day": day,
                    "model": row["model"],
                    "requests": 0,
                    "prompt_tokens": 0,
                    "completion_tokens": 0,
                    "cost_usd": 0.0,
                },
            )
            entry["requests"] += 1
            entry["prompt_tokens"] += row["prompt_tokens"]
            entry["completion_tokens"] += row["completion_tokens"]
            entry["cost_usd"] += row["cost_usd"]
        for entry in per_day.values():
            entry["cost_usd"] = round(entry["cost_usd"], 8)
        return [per_day[k] for k in sorted(per_day)]

    async def key_spent_since(self, key_id: str, since: datetime) -> tuple[float, int]:
        async with self._lock, self.db.sessions() as session:
            stored_cost, stored_tokens = await key_spent_since(session, key_id, since)
            buffered = [r for r in self._pending if r["key_id"] == key_id and r["created_at"] >= since]
        cost = float(stored_cost or 0.0) + sum(r["cost_usd"] for r in buffered)
        tokens = int(stored_tokens or 0) + sum(r["prompt_tokens"] + r["completion_tokens"] for r in buffered)
        return cost, tokens

    async def check_key(self, key: KeyGrant) -> None:
        """The key's own limits: requests per minute, then its daily budget and tokens per minute."""
        if self.limiter is not None:
            await check_rpm(self.limiter, key)
        if key.budget_usd is None and key.tpm is None:
            return
        now = datetime.now(UTC)
        cost_today, _ = await self.key_spent_since(key.key_id, start_of_day(now))
        _, tokens_minute = await self.key_spent_since(key.key_id, now - timedelta(minutes=1))
        check_spent(key, cost_today, tokens_minute)

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
        """Refuse when the user's daily budget is spent: 402 for cost, 429 for tokens; with an API
        key, also when the key's own limits are reached."""
        key = current_key.get()
        if key is not None:
            await self.check_key(key)
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
