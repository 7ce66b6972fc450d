"""Rate limits on the async API of the `limits` library: Redis when configured, in process otherwise.

The Redis storage is the redis-py asyncio client (``implementation="redispy"``), so a check never
blocks the event loop. The moving-window strategy is exact (one Lua script on Redis, atomic across
instances), so no burst of twice the limit is allowed around a window boundary. When Redis is gone
(refused, reset), checks fall back at once to an in-process moving window (per instance) and Redis
is tried again after a short interval, so an outage fails no request. When Redis is there but busy
or slow (no pooled connection, or no answer within REDIS_TIMEOUT), the check is a 503 with
Retry-After: a limit is never guessed from one process's memory while other instances count in
Redis. The in-process window is our own (``LocalMovingWindow``, the same decisions as the
library's). Several limits on one request (the gateway's minute and hour) are counted in one check,
``hit_each``: one script, one round trip.

Keys live under ``<REDIS_KEY_PREFIX>:ratelimit:``.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem
from limits import parse as _parse_limit
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.util import WindowStats
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from shared.errors import ProblemError
from shared.kv import REDIS_ERRORS, drop_connections, store_busy, waiting_pool
from shared.metrics import KV_BUSY, KV_FALLBACK
from shared.settings import ServiceSettings

_STORAGE_ERRORS: tuple[type[BaseException], ...] = (StorageError, *REDIS_ERRORS)

log = logging.getLogger("shared.ratelimit")

# Limits are named by strings from the settings ("120/minute"); parsing one costs ~7 µs and the
# gateway checks two per request, so each string is parsed once.
parse = functools.lru_cache(maxsize=256)(_parse_limit)


class LocalMovingWindow:
    """The moving window in this process: the same decisions as ``limits``' in-memory moving window
    (an attempt is allowed while fewer than the limit's amount fall in the last window), without its
    cost per check: ``limits``' memory storage starts a clean-up task on nearly every hit, which hops
    to a worker thread for each key, and inserts at the front of a list.

    Each key holds the times of its attempts, oldest first, at most the limit's amount of them; keys
    whose attempts have all left their window are dropped by a sweep at most every ``sweep_seconds``.
    Nothing here awaits, so a check is atomic on the event loop.
    """

    def __init__(self, sweep_seconds: float = 60.0) -> None:
        self._events: dict[str, tuple[deque[float], int]] = {}  # key -> (attempt times, window seconds)
        self._sweep_seconds = sweep_seconds
        self._next_sweep = time.monotonic() + sweep_seconds

    def _window(self, key: str, expiry: int, now: float) -> deque[float]:
        found = self._events.get(key)
        if found is None:
            return deque()
        events = found[0]
        start = now - expiry
        while events and events[0] < start:
            events.popleft()
        return events

    def _sweep(self) -> None:
        now = time.time()
        for key, (events, expiry) in list(self._events.items()):
            if not events or events[-1] < now - expiry:
                del self._events[key]
        self._next_sweep = time.monotonic() + self._sweep_seconds

    async def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        return self.hit_now(item, *identifiers, cost=cost)

    def hit_now(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        if time.monotonic() >= self._next_sweep:
            self._sweep()
        if cost > item.amount:
            return False
        key, expiry, now = item.key_for(*identifiers), item.get_expiry(), time.time()
        events = self._window(key, expiry, now)
        if len(events) + cost > item.amount:
            return False
        if key not in self._events:
            self._events[key] = (events, expiry)
        events.extend([now] * cost)
        return True

    async def test(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        events = self._window(item.key_for(*identifiers), item.get_expiry(), time.time())
        return len(events) <= item.amount - cost

    async def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        now = time.time()
        events = self._window(item.key_for(*identifiers), item.get_expiry(), now)
        start = events[0] if events else now
        return WindowStats(start + item.get_expiry(), item.amount - len(events))

    async def clear(self, item: RateLimitItem, *identifiers: str) -> None:
        self._events.pop(item.key_for(*identifiers), None)


# One attempt against each moving window in turn (KEYS: their lists; ARGV: now, then the amount and
# the seconds of each), up to the first that refuses it: the 1-based index of that one, or 0. Each
# step is limits' own moving-window acquisition of one entry, on the keys it uses.
_HIT_EACH = """
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i])
  local expiry = tonumber(ARGV[2 * i + 1])
  if limit < 1 then
    return i
  end
  local entry = redis.call('lindex', key, limit - 1)
  if entry and tonumber(entry) >= now - expiry then
    return i
  end
  redis.call('lpush', key, now)
  redis.call('ltrim', key, 0, limit - 1)
  redis.call('expire', key, expiry)
end
return 0
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0  # seconds until a retry can succeed (0 when allowed)
    remaining: int = 0


class RateLimiter:
    def __init__(
        self,
        redis_url: str | None,
        *,
        prefix: str = "ultrai",
        timeout: float = 0.5,
        retry_interval: float = 1.0,
        service: str = "ratelimit",
        max_connections: int = 50,
        pool_timeout: float = 1.0,
    ) -> None:
        self.service = service
        self.retry_interval = retry_interval
        self.memory = LocalMovingWindow()
        self.redis: MovingWindowRateLimiter | None = None
        self._storage: RedisStorage | None = None
        self._down_until = 0.0
        self._hit_each_script: AsyncScript | None = None
        if redis_url:
            # A pool that waits (bounded) for a free connection: a busy Redis is not a Redis that is
            # down, and must not turn the limits into per-process ones.
            pool = waiting_pool(redis_url, timeout=timeout, max_connections=max_connections, pool_timeout=pool_timeout)
            options: dict[str, Any] = {"connection_pool": pool}
            self._storage = RedisStorage(
                redis_url, implementation="redispy", wrap_exceptions=True, key_prefix=f"{prefix}:ratelimit", **options
            )
            self.redis = MovingWindowRateLimiter(self._storage)

    @classmethod
    def for_settings(cls, settings: ServiceSettings, service: str) -> RateLimiter:
        return cls(
            settings.redis_url,
            prefix=settings.redis_key_prefix,
            timeout=settings.redis_timeout,
            service=service,
            max_connections=settings.redis_max_connections,
            pool_timeout=settings.redis_pool_timeout,
        )

    @property
    def configured(self) -> bool:
        return self.redis is not None

    def _limiter(self) -> MovingWindowRateLimiter | LocalMovingWindow:
        if self.redis is not None and time.monotonic() >= self._down_until:
            return self.redis
        return self.memory

    async def _failed(self, exc: BaseException) -> None:
        cause = exc.storage_error if isinstance(exc, StorageError) else exc
        if store_busy(cause):
            # Busy or slow, not down: the decision cannot be made now, and a limit is not guessed.
            KV_BUSY.labels(self.service).inc()
            raise ProblemError(
                503,
                "The rate limiter is busy; try again shortly.",
                title="Service unavailable",
                headers={"Retry-After": "1"},
            )
        if time.monotonic() >= self._down_until:
            log.warning("redis unavailable for rate limits (%s); limiting in process", type(exc).__name__)
        self._down_until = time.monotonic() + self.retry_interval
        KV_FALLBACK.labels(self.service).inc()
        await drop_connections(self._client())

    def _client(self) -> Redis | None:  # the redis-py client inside the limits storage
        bridge = getattr(self._storage, "bridge", None)
        return getattr(bridge, "storage", None) if bridge is not None else None

    async def _retry_after(
        self, limiter: MovingWindowRateLimiter | LocalMovingWindow, item: RateLimitItem, ids: tuple[str, ...]
    ) -> int:
        stats = await limiter.get_window_stats(item, *ids)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def hit(self, item: RateLimitItem | str, *identifiers: str, cost: int = 1) -> Decision:
        """Count one attempt; refused (with Retry-After seconds) when the limit is reached."""
        item = parse(item) if isinstance(item, str) else item
        limiter = self._limiter()
        try:
            allowed = await limiter.hit(item, *identifiers, cost=cost)
            if allowed:
                return Decision(True)
            return Decision(False, await self._retry_after(limiter, item, identifiers))
        except _STORAGE_ERRORS as exc:
            await self._failed(exc)
            return await self.hit(item, *identifiers, cost=cost)

    async def hit_each(self, items: Sequence[RateLimitItem | str], *identifiers: str) -> tuple[int, Decision]:
        """Count one attempt against each limit in turn, as ``hit`` would one after another, up to
        the first that refuses it: that one's index and decision, or (-1, allowed). With Redis, one
        round trip (one script) instead of one per limit."""
        parsed = [parse(item) if isinstance(item, str) else item for item in items]
        limiter = self._limiter()
        try:
            if isinstance(limiter, LocalMovingWindow):
                refused = next((n for n, item in enumerate(parsed) if not limiter.hit_now(item, *identifiers)), -1)
            else:
                refused = await self._hit_each_in_redis(parsed, identifiers)
            if refused < 0:
                return -1, Decision(True)
            return refused, Decision(False, await self._retry_after(limiter, parsed[refused], identifiers))
        except _STORAGE_ERRORS as exc:
            await self._failed(exc)
            return await self.hit_each(items, *identifiers)

    async def _hit_each_in_redis(self, items: list[RateLimitItem], identifiers: tuple[str, ...]) -> int:
        if self._hit_each_script is None:
            client = self._client()
            if client is None:
                raise RuntimeError("the Redis rate-limit storage has no client")
            self._hit_each_script = client.register_script(_HIT_EACH)
        bridge = self._storage.bridge  # type: ignore[union-attr]
        keys = [bridge.prefixed_key(item.key_for(*identifiers)) for item in items]
        args: list[float] = [time.time()]
        for item in items:
            args += [item.amount, item.get_expiry()]
        return int(await self._hit_each_script(keys, args)) - 1

    async def test(self, item: RateLimitItem | str, *identifiers: str) -> Decision:
        """Would one more attempt be allowed? Counts nothing."""
        item = parse(item) if isinstance(item, str) else item
        limiter = self._limiter()
        try:
            if await limiter.test(item, *identifiers):
                return Decision(True)
            return Decision(False, await self._retry_after(limiter, item, identifiers))
        except _STORAGE_ERRORS as exc:
            await self._failed(exc)
            return await self.test(item, *identifiers)

    async def clear(self, item: RateLimitItem | str, *identifiers: str) -> None:
        item = parse(item) if isinstance(item, str) else item
        limiters: tuple[MovingWindowRateLimiter | LocalMovingWindow | None, ...] = (self.redis, self.memory)
        for limiter in limiters:
            if limiter is None:
                continue
            try:
                await limiter.clear(item, *identifiers)
            except _STORAGE_ERRORS as exc:
                if not store_busy(exc.storage_error if isinstance(exc, StorageError) else exc):
                    await self._failed(exc)  # a busy pool only leaves the counter to expire

    async def close(self) -> None:
        # The redis-py storage keeps a connection pool; release it at shutdown.
        client = self._client()
        if client is not None:
            try:
                await client.aclose()
            except Exception as exc:  # closing is best effort
                log.debug("closing rate-limit storage: %s", type(exc).__name__)
