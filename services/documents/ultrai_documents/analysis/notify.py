"""Progress pushed, not polled: whoever records an analysis' event says so, and the reader of that
analysis' event streams in each process, on any instance, reads the database at once (events.py).

The database stays the record; a notification carries only the analysis' id and means "read
again". With Redis, notifications go through one pub/sub channel that every documents instance
and worker shares (one subscription per process, dispatched here to the streams waiting on it);
without Redis they reach the readers of this process only, and a reader also re-reads the database
every ``SSE_POLL_SECONDS`` for analyses that other processes run. Pub/sub delivers at most once,
so with Redis a reader still re-reads every ``SSE_FALLBACK_SECONDS`` in case a message was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from redis.asyncio import Redis

log = logging.getLogger("ultrai_documents.analyses")


class Notifier:
    """In-process notifications (the embedded default); ``RedisNotifier`` spans processes."""

    def __init__(self, fallback_seconds: float) -> None:
        # How long a stream waits for a notification before it reads the database anyway.
        self.fallback_seconds = fallback_seconds
        self._waiting: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    @contextlib.contextmanager
    def watch(self, analysis_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the analysis has news; subscribe before the first read."""
        signal = asyncio.Event()
        self._waiting[analysis_id].add(signal)
        try:
            yield signal
        finally:
            waiting = self._waiting.get(analysis_id)
            if waiting is not None:
                waiting.discard(signal)
                if not waiting:
                    del self._waiting[analysis_id]

    def _wake(self, analysis_id: str) -> None:
        for signal in self._waiting.get(analysis_id, ()):
            signal.set()

    async def publish(self, analysis_id: str) -> None:
        self._wake(analysis_id)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class RedisNotifier(Notifier):
    """Notifications over one Redis pub/sub channel shared by every process of the service."""

    def __init__(self, url: str, channel: str, fallback_seconds: float) -> None:
        super().__init__(fallback_seconds)
        self.channel = channel
        self._redis: Redis = Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
        self._task: asyncio.Task[None] | None = None

    async def publish(self, analysis_id: str) -> None:
        try:
            await self._redis.publish(self.channel, analysis_id)
        except Exception as exc:  # the stream's fallback read still delivers the event
            log.warning("could not publish the news of analysis %s (%s)", analysis_id, type(exc).__name__)
            self._wake(analysis_id)

    async def start(self) -> None:
        """Subscribe before answering anything (a failure here is Redis being down: the listener
        retries and the streams fall back to reading the database)."""
        self._task = asyncio.create_task(self._listen(), name="analysis-notifications")

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    async for message in pubsub.listen():
                        self._on_message(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("analysis notifications interrupted (%s); resubscribing", type(exc).__name__)
                # Streams may have missed news meanwhile: every one of them reads again.
                for analysis_id in list(self._waiting):
                    self._wake(analysis_id)
                await asyncio.sleep(1.0)

    def _on_message(self, message: dict[str, Any]) -> None:
        data = message.get("data")
        if isinstance(data, bytes):
            self._wake(data.decode("utf-8", "replace"))

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._redis.aclose()


def notifier_for(redis_url: str | None, prefix: str, poll_seconds: float, fallback_seconds: float) -> Notifier:
    if redis_url:
        return RedisNotifier(redis_url, f"{prefix}:documents:analysis-events", fallback_seconds)
    return Notifier(poll_seconds)
