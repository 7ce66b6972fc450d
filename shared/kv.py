"""Key-value storage on Redis with an in-process fallback.

With no REDIS_URL everything lives in process (health says ``warn``). When Redis is configured but
stops answering, operations fall back to process memory at once, and Redis is tried again after a
short interval, so the service uses it again by itself when it is back. A Redis failure never fails
a request.

Busy or slow is not down: the connection pool is bounded (REDIS_MAX_CONNECTIONS) and a call waits for
a free connection up to REDIS_POOL_TIMEOUT, then for the answer up to REDIS_TIMEOUT. A call that
finds no connection, or no answer in time, raises ``RedisBusy`` in the strict operations
(``mget_strict``), and is a cache miss in the others; either way the store does not switch to
process memory, which would silently make shared state per process.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Collection

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.health import Check, CheckResult
from shared.metrics import KV_BUSY, KV_FALLBACK
from shared.settings import ServiceSettings

log = logging.getLogger("shared.kv")

# What a Redis call can raise when the server is gone. Under uvloop (what the services run on), a
# write to a connection the server dropped raises RuntimeError ("the handler is closed") rather
# than a redis ConnectionError, and redis-py then puts that dead connection back in its pool.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, RuntimeError)


class StoreUnavailable(Exception):
    """The shared store could not answer (down, or busy past the pool's bounded wait)."""


class RedisBusy(StoreUnavailable):
    """Every pooled connection stayed in use for the whole bounded wait, or Redis did not answer in
    time."""


def pool_exhausted(exc: BaseException) -> bool:
    """Whether ``exc`` says the pool had no free connection, rather than that Redis is gone."""
    if isinstance(exc, MaxConnectionsError):
        return True
    return isinstance(exc, RedisConnectionError) and str(exc) == "No connection available."


def store_busy(exc: BaseException) -> bool:
    """Whether ``exc`` says Redis is there but busy or slow (no free pooled connection within
    REDIS_POOL_TIMEOUT, or no answer within REDIS_TIMEOUT), rather than gone (refused, reset).
    A decision that needs Redis cannot be made now; it must not be made from process memory."""
    return pool_exhausted(exc) or isinstance(exc, RedisTimeoutError | TimeoutError)


def waiting_pool(url: str, *, timeout: float, max_connections: int, pool_timeout: float) -> BlockingConnectionPool:
    """A connection pool that waits (at most ``pool_timeout``) for a free connection instead of
    failing at once when ``max_connections`` are in use."""
    return BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=15,
        retry_on_timeout=False,
    )


def redis_client(url: str, *, timeout: float, max_connections: int, pool_timeout: float) -> Redis:
    """A client on a ``waiting_pool``."""
    pool = waiting_pool(url, timeout=timeout, max_connections=max_connections, pool_timeout=pool_timeout)
    return Redis(connection_pool=pool)


async def drop_connections(client: Redis | None) -> None:
    """Disconnect every pooled connection, so the next call dials afresh instead of reusing one
    whose transport is closed."""
    if client is None:
        return
    try:
        await client.connection_pool.disconnect(inuse_connections=False)
    except REDIS_ERRORS:
        pass


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a Redis SCAN pattern."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


class MemoryStore:
    """A bounded LRU with per-key expiry, for one process."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()

    def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        expires = time.monotonic() + ttl if ttl else None
        self._data[key] = (value, expires)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def delete_where(self, doomed: Callable[[str], bool]) -> int:
        keys = [key for key in self._data if doomed(key)]
        for key in keys:
            del self._data[key]
        return len(keys)


class KeyValue:
    def __init__(
        self,
        url: str | None,
        *,
        service: str,
        prefix: str = "ultrai",
        timeout: float = 0.5,
        retry_interval: float = 1.0,
        max_local_entries: int = 10_000,
        max_connections: int = 50,
        pool_timeout: float = 1.0,
    ) -> None:
        self.url = url
        self.service = service
        self.prefix = f"{prefix}:{service}:"
        self.retry_interval = retry_interval
        self.local = MemoryStore(max_local_entries)
        self._down_until = 0.0
        self.redis: Redis | None = None
        if url:
            self.redis = redis_client(url, timeout=timeout, max_connections=max_connections, pool_timeout=pool_timeout)

    @classmethod
    def for_settings(cls, settings: ServiceSettings, service: str) -> KeyValue:
        return cls(
            settings.redis_url,
            service=service,
            prefix=settings.redis_key_prefix,
            timeout=settings.redis_timeout,
            max_connections=settings.redis_max_connections,
            pool_timeout=settings.redis_pool_timeout,
        )

    @property
    def configured(self) -> bool:
        return self.redis is not None

    def _usable(self) -> Redis | None:
        if self.redis is None or time.monotonic() < self._down_until:
            return None
        return self.redis

    @property
    def down(self) -> bool:
        """Configured, but failing: in-process storage is standing in for it."""
        return self.redis is not None and time.monotonic() < self._down_until

    async def _failed(self, exc: BaseException) -> None:
        if store_busy(exc):
            # Busy or slow, not down: this call gets no answer, the next one tries Redis again.
            KV_BUSY.labels(self.service).inc()
            return
        if time.monotonic() >= self._down_until:
            log.warning("redis unavailable (%s); using in-process storage", type(exc).__name__)
        self._down_until = time.monotonic() + self.retry_interval
        KV_FALLBACK.labels(self.service).inc()
        await drop_connections(self.redis)

    def key(self, name: str) -> str:
        return self.prefix + name

    async def get(self, name: str) -> bytes | None:
        redis = self._usable()
        if redis is not None:
            try:
                value = await redis.get(self.key(name))
                return value.encode() if isinstance(value, str) else value
            except REDIS_ERRORS as exc:
                await self._failed(exc)
                if store_busy(exc):
                    return None
        return self.local.get(name)

    async def mget_strict(self, names: list[str]) -> list[bytes | None]:
        """Several keys in one round trip, from Redis only: ``StoreUnavailable`` (``RedisBusy`` when
        the pool stayed full) instead of an in-process guess. For answers that must not be guessed,
        such as whether a token is revoked."""
        redis = self._usable()
        if redis is None:
            raise StoreUnavailable("redis is not configured" if self.redis is None else "redis is down")
        try:
            values = await redis.mget([self.key(name) for name in names])
        except REDIS_ERRORS as exc:
            await self._failed(exc)
            if store_busy(exc):
                raise RedisBusy(str(exc)) from None
            raise StoreUnavailable(type(exc).__name__) from None
        return [v.encode() if isinstance(v, str) else v for v in values]

    async def set(self, name: str, value: bytes | str, ttl: float | None = None, *, strict: bool = False) -> None:
        """Store a value. Redis busy: not stored (a cache loses one entry), or ``RedisBusy`` when
        ``strict``; Redis down: kept in process until Redis is back."""
        data = value.encode() if isinstance(value, str) else value
        redis = self._usable()
        if redis is not None:
            try:
                await redis.set(self.key(name), data, px=int(ttl * 1000) if ttl else None)
                return
            except REDIS_ERRORS as exc:
                await self._failed(exc)
                if store_busy(exc):
                    if strict:
                        raise RedisBusy(str(exc)) from None
                    return
        self.local.set(name, data, ttl)

    async def delete(self, name: str) -> None:
        self.local.delete(name)
        redis = self._usable()
        if redis is not None:
            try:
                await redis.delete(self.key(name))
            except REDIS_ERRORS as exc:
                await self._failed(exc)

    async def delete_prefixes(self, under: str, prefixes: Collection[str]) -> int:
        """Delete every key that starts with one of ``prefixes`` (each starting with ``under``),
        here and in Redis: one SCAN of the keys under ``under``, however many prefixes. Unlike the
        other calls, Redis busy or down raises ``StoreUnavailable``: an erasure is retried, never
        taken as done. Returns how many keys went."""
        wanted = tuple(prefixes)
        if not wanted:
            return 0
        if not all(p.startswith(under) for p in wanted):
            raise ValueError("every prefix must start with under")
        gone = self.local.delete_where(lambda key: key.startswith(wanted))
        if self.redis is None:
            return gone
        redis = self._usable()
        if redis is None:
            raise StoreUnavailable("redis is down")
        full = tuple(self.key(p) for p in wanted)
        try:
            batch: list[bytes | str] = []
            async for key in redis.scan_iter(match=_glob_escape(self.key(under)) + "*", count=1000):
                text = key.decode() if isinstance(key, bytes) else key
                if text.startswith(full):
                    batch.append(key)
                if len(batch) >= 500:
                    gone += await redis.unlink(*batch)
                    batch = []
            if batch:
                gone += await redis.unlink(*batch)
        except REDIS_ERRORS as exc:
            await self._failed(exc)
            raise StoreUnavailable(type(exc).__name__) from None
        return gone

    async def ping(self) -> bool:
        if self.redis is None:
            return False
        try:
            await self.redis.ping()
        except REDIS_ERRORS as exc:
            await self._failed(exc)
            return False
        self._down_until = 0.0
        return True

    def health_check(self) -> Check:
        async def probe() -> CheckResult:
            if self.redis is None:
                return CheckResult("warn", "not configured; caches and rate limits are in process")
            if await self.ping():
                return CheckResult("pass")
            return CheckResult("warn", "unreachable; caches and rate limits fall back to in process")

        return Check("redis", probe, component_type="datastore", critical=False, timeout=1.0)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
