"""Limits per API key, checked before any provider call: its budget (USD per UTC day: 402), its
requests per minute (429) and its tokens per minute (429), each with Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.apikeys import KeyGrant
from shared.errors import ProblemError
from shared.ratelimit import RateLimiter

RPM_WINDOW = "apikey-rpm"


def _retry_at_midnight(now: datetime) -> str:
    tomorrow = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return str(int((tomorrow - now).total_seconds()) + 1)


async def check_rpm(limiter: RateLimiter, key: KeyGrant) -> None:
    if key.rpm is None:
        return
    decision = await limiter.hit(f"{key.rpm}/minute", RPM_WINDOW, key.key_id)
    if not decision.allowed:
        raise ProblemError(
            429,
            f"This API key may make {key.rpm} requests per minute.",
            title="Too many requests",
            headers={"Retry-After": str(decision.retry_after)},
        )


def check_spent(key: KeyGrant, cost_today: float, tokens_last_minute: int) -> None:
    now = datetime.now(UTC)
    if key.budget_usd is not None and cost_today >= key.budget_usd:
        detail = (
            f"This API key's daily budget of ${key.budget_usd:g} is spent (${cost_today:.4f}); it renews at 00:00 UTC."
        )
        raise ProblemError(402, detail, title="Budget spent", headers={"Retry-After": _retry_at_midnight(now)})
    if key.tpm is not None and tokens_last_minute >= key.tpm:
        raise ProblemError(
            429,
            f"This API key may use {key.tpm} tokens per minute ({tokens_last_minute} used).",
            title="Too many tokens",
            headers={"Retry-After": "60"},
        )
