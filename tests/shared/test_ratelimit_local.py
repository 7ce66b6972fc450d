"""shared/ratelimit.py: the moving window kept in this process (no Redis, or while it is down)."""

from __future__ import annotations

import time

from limits import parse

from shared.ratelimit import LocalMovingWindow, RateLimiter


async def test_the_limit_is_reached_per_key_and_retry_after_names_the_window() -> None:
    limiter = RateLimiter(None)
    decisions = [await limiter.hit("3/minute", "login", "1.2.3.4") for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert 1 <= decisions[-1].retry_after <= 60
    assert (await limiter.hit("3/minute", "login", "5.6.7.8")).allowed  # another key, its own budget
    assert not (await limiter.test("3/minute", "login", "1.2.3.4")).allowed
    await limiter.clear("3/minute", "login", "1.2.3.4")
    assert (await limiter.hit("3/minute", "login", "1.2.3.4")).allowed


async def test_a_cost_counts_that_many_attempts_and_one_over_the_limit_never_passes() -> None:
    window, item = LocalMovingWindow(), parse("5/hour")
    assert await window.hit(item, "k", cost=4)
    assert not await window.hit(item, "k", cost=2)
    assert await window.hit(item, "k", cost=1)
    assert not await window.hit(item, "other", cost=6)
    stats = await window.get_window_stats(item, "k")
    assert stats.remaining == 0 and stats.reset_time > time.time()


async def test_attempts_leave_the_window_and_idle_keys_are_swept() -> None:
    window, item = LocalMovingWindow(sweep_seconds=0), parse("2/second")
    assert await window.hit(item, "k") and await window.hit(item, "k")
    assert not await window.hit(item, "k")
    time.sleep(1.05)
    assert await window.hit(item, "other")  # the sweep runs first: "k" has nothing left in its window
    assert item.key_for("k") not in window._events
    assert await window.hit(item, "k")
