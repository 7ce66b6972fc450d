"""Where analyses run. ``Runner`` is the one interface to it: ``InProcessRunner`` runs them as tasks
in this process (the default); a queue-backed runner can replace it. State lives in the database
(the analysis row and its events), so any instance can answer a poll or an event stream."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ultrai_documents.repository import DocumentsRepository


class Runner(Protocol):
    """Where analyses run. ``submit`` hands over an analysis in status ``queued``; the work claims
    it (queued -> running) in the database, so a runner may deliver one more than once."""

    async def submit(self, analysis_id: str) -> None: ...

    async def aclose(self) -> None: ...


class InProcessRunner:
    """Analyses as tasks in this process, at most ``concurrency`` at once; the work does not depend
    on the client that asked for it (it survives the request)."""

    def __init__(self, work: Callable[[str], Awaitable[None]], concurrency: int = 4) -> None:
        self._work = work
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, analysis_id: str) -> None:
        task = asyncio.create_task(self._run(analysis_id), name=f"analysis-{analysis_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, analysis_id: str) -> None:
        async with self._slots:
            await self._work(analysis_id)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def resubmit_unfinished(
    sessions: async_sessionmaker[AsyncSession], runner: Runner, started_before: datetime
) -> None:
    """Work that a previous process left unfinished is picked up again: analyses it had started
    go back to the queue, and everything queued is submitted. Several processes starting at once
    may submit the same analysis; the claim in the work lets one of them run it."""
    async with sessions() as session:
        repository = DocumentsRepository(session)
        await repository.requeue_interrupted(started_before)
        await repository.commit()
        pending = await repository.queued_analysis_ids()
    for analysis_id in pending:
        await runner.submit(analysis_id)
