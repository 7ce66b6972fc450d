"""An analysis' progress as server-sent events, read from the database (any instance can serve it)
as soon as a notification says there is news (see notify.py).

The streams of one analysis in one process share one reader (``_Feed``): it reads the analysis'
events once per notification (and once per fallback period), keeps them, and every stream sends
what it has not sent yet from there. The database's load grows with the analyses being watched,
not with the number of watchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ultrai_documents.analysis.notify import Notifier
from ultrai_documents.repository import DocumentsRepository

TERMINAL = ("completed", "failed", "cancelled")
KEEP_ALIVE_SECONDS = 15
PAGE = 200


@dataclass
class _Feed:
    """The events of one analysis as this process has read them, for every stream following it."""

    chunks: list[tuple[int, str, bytes]] = field(default_factory=list)  # (id, event, SSE chunk)
    done: bool = False  # nothing more will come (a final event read, or the analysis gone)
    error: BaseException | None = None
    updated: asyncio.Event = field(default_factory=asyncio.Event)  # replaced at each update
    streams: int = 0
    task: asyncio.Task[None] | None = None

    def publish(self) -> None:
        updated, self.updated = self.updated, asyncio.Event()
        updated.set()


# Per notifier (one per app), the feeds of the analyses its streams follow.
_FEEDS: weakref.WeakKeyDictionary[Notifier, dict[str, _Feed]] = weakref.WeakKeyDictionary()


async def event_stream(
    sessions: async_sessionmaker[AsyncSession], analysis_id: str, last_id: int, notifier: Notifier
) -> AsyncIterator[bytes]:
    """The analysis' events after ``last_id`` as they are recorded, until its final one; a comment
    now and then keeps an idle connection open."""
    with _following(sessions, analysis_id, notifier) as feed:
        sent = 0  # chunks of the feed looked at
        while True:
            updated = feed.updated
            while sent < len(feed.chunks):
                event_id, name, chunk = feed.chunks[sent]
                sent += 1
                if event_id > last_id:
                    last_id = event_id
                    yield chunk
                    if name in TERMINAL:
                        return
            if feed.error is not None:
                raise feed.error
            if feed.done:
                return
            try:
                await asyncio.wait_for(updated.wait(), KEEP_ALIVE_SECONDS)
            except TimeoutError:
                yield b": keep-alive\n\n"


@contextlib.contextmanager
def _following(sessions: async_sessionmaker[AsyncSession], analysis_id: str, notifier: Notifier) -> Iterator[_Feed]:
    """The analysis' feed in this process, started by its first stream and stopped after its last."""
    feeds = _FEEDS.setdefault(notifier, {})
    feed = feeds.get(analysis_id)
    if feed is None:
        feed = feeds[analysis_id] = _Feed()
        feed.task = asyncio.create_task(_read(sessions, analysis_id, notifier, feed), name=f"events-{analysis_id}")
    feed.streams += 1
    try:
        yield feed
    finally:
        feed.streams -= 1
        if feed.streams == 0:
            if feeds.get(analysis_id) is feed:
                del feeds[analysis_id]
            if feed.task is not None:
                feed.task.cancel()


async def _read(sessions: async_sessionmaker[AsyncSession], analysis_id: str, notifier: Notifier, feed: _Feed) -> None:
    """Reads the analysis' events into the feed: all of them first, then those after the last one
    read, whenever a notification says there is news and every ``notifier.fallback_seconds``."""
    last_id = 0
    try:
        with notifier.watch(analysis_id) as news:
            while True:
                # Cleared before the read: news that arrives during it is seen by the next wait.
                news.clear()
                async with sessions() as session:
                    repository = DocumentsRepository(session)
                    # The status first: the final event commits with the final status, so once the
                    # status read is terminal, the events read next include the last one.
                    status = await repository.analysis_status(analysis_id)
                    rows = await repository.events_after(analysis_id, last_id, limit=PAGE)
                for row in rows:
                    last_id = row.id
                    payload = json.dumps(row.data, separators=(",", ":"), ensure_ascii=False)
                    chunk = f"id: {row.id}\nevent: {row.event}\ndata: {payload}\n\n".encode()
                    feed.chunks.append((row.id, row.event, chunk))
                if any(row.event in TERMINAL for row in rows) or (not rows and (status is None or status in TERMINAL)):
                    feed.done = True
                if rows or feed.done:
                    feed.publish()
                if feed.done:
                    return
                if len(rows) < PAGE:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(news.wait(), notifier.fallback_seconds)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the database away: every stream of the feed ends with the error
        feed.error = exc
        feed.done = True
        # A later stream starts a new reader.
        feeds = _FEEDS.get(notifier, {})
        if feeds.get(analysis_id) is feed:
            del feeds[analysis_id]
        feed.publish()
