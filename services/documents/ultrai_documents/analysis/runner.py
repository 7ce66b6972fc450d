"""Where analyses run. ``Runner`` is the one interface to it:

- ``QueueRunner`` (with ``REDIS_URL``): analyses are jobs on a SAQ queue in Redis, run by worker
  processes (``python -m ultrai_documents.worker``) or, with ``ANALYSIS_WEB_CONSUMES``, by the
  documents process itself. SAQ's heartbeats and sweeps find the job of a worker that died, and it is
  delivered again, to another worker, which takes the analysis over.
- ``InProcessRunner`` (the embedded default, ``make dev``): analyses as tasks in this process, with
  a heartbeat in the analysis' row, so that another instance takes over only those whose process
  stopped beating.

State lives in the database (the analysis row and its events), so any instance can answer a poll
or an event stream; the analyst's claim makes a second delivery of the same analysis a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from saq import Queue
from saq.job import Status
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ultrai_documents.models import utcnow
from ultrai_documents.repository import DocumentsRepository
from ultrai_documents.settings import DocumentsSettings

log = logging.getLogger("ultrai_documents.analyses")

# The queue's one job function: what workers register, what submit enqueues.
JOB_FUNCTION = "analysis"


class Runner(Protocol):
    """Where analyses run. ``submit`` hands over an analysis in status ``queued``; the work claims
    it (queued -> running) in the database, so a runner may deliver one more than once. ``cancel``
    stops the work of an analysis already marked cancelled (its calls in flight)."""

    async def submit(self, analysis_id: str) -> None: ...

    async def cancel(self, analysis_id: str) -> None: ...

    async def aclose(self) -> None: ...


class InProcessRunner:
    """Analyses as tasks in this process, at most ``concurrency`` at once; the work does not depend
    on the client that asked for it (it survives the request).

    With ``sessions``, every ``lease_seconds / 3`` it marks the analyses it runs as alive, puts back
    in the queue those whose runner has been silent for ``lease_seconds`` (a process that stopped),
    and runs what is queued: instances that share a database finish each other's work, and an
    instance that is still running (the old one in a rolling deploy) keeps its own."""

    def __init__(
        self,
        work: Callable[[str], Awaitable[object]],
        concurrency: int = 4,
        *,
        sessions: async_sessionmaker[AsyncSession] | None = None,
        lease_seconds: float = 30.0,
    ) -> None:
        self._work = work
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sessions = sessions
        self._lease = lease_seconds
        self._keeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._sessions is not None:
            self._keeper = asyncio.create_task(self._keep(), name="analysis-runner-heartbeat")

    async def submit(self, analysis_id: str) -> None:
        if analysis_id in self._tasks:
            return
        task = asyncio.create_task(self._run(analysis_id), name=f"analysis-{analysis_id}")
        self._tasks[analysis_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(analysis_id, None))

    async def _run(self, analysis_id: str) -> None:
        async with self._slots:
            await self._work(analysis_id)

    async def cancel(self, analysis_id: str) -> None:
        task = self._tasks.get(analysis_id)
        if task is not None:
            task.cancel()

    async def _keep(self) -> None:
        assert self._sessions is not None
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                now = utcnow()
                async with self._sessions() as session:
                    repository = DocumentsRepository(session)
                    await repository.touch_analyses(list(self._tasks), now)
                    await repository.requeue_interrupted(now - timedelta(seconds=self._lease))
                    await repository.commit()
                    pending = await repository.queued_analysis_ids()
                for analysis_id in pending:
                    await self.submit(analysis_id)
            except Exception:
                log.exception("the analyses' heartbeat failed")

    async def aclose(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def analysis_queue(settings: DocumentsSettings) -> Queue:
    """The SAQ queue of analyses in ``REDIS_URL``, named under ``REDIS_KEY_PREFIX``."""
    if not settings.redis_url:
        raise ValueError("the analysis queue needs REDIS_URL")
    return Queue.from_url(settings.redis_url, name=f"{settings.redis_key_prefix}:analyses")


def job_options(settings: DocumentsSettings) -> dict[str, Any]:
    """How a job of an analysis is kept by SAQ: its key is the analysis' id (an analysis is queued
    once however often it is submitted), its worker must beat every ANALYSIS_HEARTBEAT_SECONDS or
    the sweep hands it to another, at most ANALYSIS_ATTEMPTS deliveries, ANALYSIS_TIMEOUT_SECONDS."""
    return {
        "timeout": settings.analysis_timeout_seconds,
        "heartbeat": settings.analysis_heartbeat_seconds,
        "retries": settings.analysis_attempts,
        "ttl": 3600,
    }


class QueueRunner:
    """Analyses as jobs on the SAQ queue in Redis, for the workers."""

    def __init__(self, queue: Queue, settings: DocumentsSettings) -> None:
        self.queue = queue
        self._options = job_options(settings)

    async def start(self) -> None:
        await self.queue.connect()

    async def submit(self, analysis_id: str) -> None:
        await self.queue.enqueue(JOB_FUNCTION, key=analysis_id, analysis_id=analysis_id, **self._options)

    async def cancel(self, analysis_id: str) -> None:
        """Abort the analysis' job: taken off the queue when it waits there; when it runs, its
        worker cancels the work within a second (SAQ's abort check)."""
        job = await self.queue.job(analysis_id)
        if job is not None and job.status in (Status.QUEUED, Status.ACTIVE):
            await self.queue.abort(job, "cancelled")

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.queue.disconnect()


async def resubmit_unfinished(
    sessions: async_sessionmaker[AsyncSession], runner: Runner, silent_since: datetime | None
) -> None:
    """Work that nobody is doing is picked up again: with ``silent_since`` (the in-process runner),
    analyses whose runner has not beaten since then go back to the queue; then everything queued is
    submitted. A running analysis whose runner is alive is left to it (a rolling deploy repeats
    nothing), and the queue's own sweep finds the jobs of dead workers. Several processes starting
    at once may submit the same analysis; the claim in the work lets one of them run it."""
    async with sessions() as session:
        repository = DocumentsRepository(session)
        if silent_since is not None:
            await repository.requeue_interrupted(silent_since)
            await repository.commit()
        pending = await repository.queued_analysis_ids()
    for analysis_id in pending:
        await runner.submit(analysis_id)
