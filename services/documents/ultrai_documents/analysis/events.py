"""An analysis' progress as server-sent events, read from the database (any instance can serve it)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ultrai_documents.repository import DocumentsRepository

TERMINAL = ("completed", "failed")
KEEP_ALIVE_SECONDS = 15


async def event_stream(
    sessions: async_sessionmaker[AsyncSession], analysis_id: str, last_id: int, poll_seconds: float
) -> AsyncIterator[bytes]:
    """The analysis' events after ``last_id`` as they are recorded, until its final one; a comment
    now and then keeps an idle connection open. Each poll reads in a short session of its own."""
    idle = 0.0
    while True:
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
            idle += poll_seconds
            if idle >= KEEP_ALIVE_SECONDS:
                idle = 0.0
                yield b": keep-alive\n\n"
            await asyncio.sleep(poll_seconds)
