"""An analysis' progress as server-sent events, read from the database (any instance can serve it)
as soon as a notification says there is news (see notify.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ultrai_documents.analysis.notify import Notifier
from ultrai_documents.repository import DocumentsRepository

TERMINAL = ("completed", "failed", "cancelled")
KEEP_ALIVE_SECONDS = 15


async def event_stream(
    sessions: async_sessionmaker[AsyncSession], analysis_id: str, last_id: int, notifier: Notifier
) -> AsyncIterator[bytes]:
    """The analysis' events after ``last_id`` as they are recorded, until its final one; a comment
    now and then keeps an idle connection open. Each read is in a short session of its own."""
    with notifier.watch(analysis_id) as news:
        async for chunk in _stream(sessions, analysis_id, last_id, notifier.fallback_seconds, news):
            yield chunk


async def _stream(
    sessions: async_sessionmaker[AsyncSession],
    analysis_id: str,
    last_id: int,
    wait_seconds: float,
    news: asyncio.Event,
) -> AsyncIterator[bytes]:
    idle = 0.0
    while True:
        # Cleared before the read: news that arrives during it is seen by the next wait.
        news.clear()
        async with sessions() as session:
            repository = DocumentsRepository(session)
            # The status first: the final event commits with the final status, so once the
            # status read is terminal, the events read next include the last one.
            status = await repository.analysis_status(analysis_id)
            rows = await repository.events_after(analysis_id, last_id, limit=200)
        for row in rows:
            last_id = row.id
            payload = json.dumps(row.data, separators=(",", ":"), ensure_ascii=False)
            yield f"id: {row.id}\nevent: {row.event}\ndata: {payload}\n\n".encode()
            if row.event in TERMINAL:
                return
        if not rows:
            if status is None or status in TERMINAL:
                return
            started = loop_time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(news.wait(), wait_seconds)
            idle += loop_time() - started
            if idle >= KEEP_ALIVE_SECONDS:
                idle = 0.0
                yield b": keep-alive\n\n"
        else:
            idle = 0.0


def loop_time() -> float:
    return asyncio.get_running_loop().time()
