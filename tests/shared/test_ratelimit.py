"""shared/ratelimit.py: the moving window kept in this process (no Redis, or while it is down), and
several limits counted in one check, in process and in Redis."""

from __future__ import annotations

import time

import pytest
from limits import parse

from shared.ratelimit import LocalMovingWindow, RateLimiter
from tests.conftest import redis_prefix


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


async def _each_as_consecutive_hits(limiter: RateLimiter) -> None:
    """``hit_each`` decides as ``hit`` on each limit in turn would, and counts the same attempts."""
    limits = ["2/minute", "3/hour"]
    outcomes = [await limiter.hit_each(limits, "gw", "1.2.3.4") for _ in range(3)]
    assert [(n, d.allowed) for n, d in outcomes] == [(-1, True), (-1, True), (0, False)]
    assert 1 <= outcomes[-1][1].retry_after <= 60
    # The refused attempt was not counted against the hour: one more fits there.
    assert (await limiter.hit("3/hour", "gw", "1.2.3.4")).allowed
    assert not (await limiter.test("3/hour", "gw", "1.2.3.4")).allowed
    await limiter.clear("2/minute", "gw", "1.2.3.4")
    refused, decision = await limiter.hit_each(limits, "gw", "1.2.3.4")
    assert (refused, decision.allowed) == (1, False)  # the minute counted it, the hour refused it
    assert (await limiter.hit("2/minute", "gw", "1.2.3.4")).allowed  # the second of two
    assert not (await limiter.test("2/minute", "gw", "1.2.3.4")).allowed
    assert (await limiter.hit_each(limits, "gw", "5.6.7.8"))[1].allowed  # another address, its own


async def test_several_limits_in_one_check_in_process() -> None:
    await _each_as_consecutive_hits(RateLimiter(None))


async def test_several_limits_in_one_check_in_redis(redis_url) -> None:
    if not redis_url:
        pytest.skip("TEST_REDIS_URL not set")
    limiter = RateLimiter(redis_url, prefix=redis_prefix("rl-each"))
    try:
        await _each_as_consecutive_hits(limiter)
        # Kept where the limits library keeps them: its own check sees the attempts counted above.
        assert not (await limiter.hit("3/hour", "gw", "1.2.3.4")).allowed
        assert (await limiter.hit("2/minute", "gw", "5.6.7.8")).allowed  # its second: one came from hit_each
        assert not (await limiter.test("2/minute", "gw", "5.6.7.8")).allowed
        assert limiter._limiter() is limiter.redis  # never fell back to process memory
    finally:
        await limiter.close()
