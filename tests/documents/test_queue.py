"""The analysis queue's bookkeeping on real PostgreSQL and Redis, in process: analyses the queue gave
up on are recorded as failed, and nothing a live worker or a waiting job holds is touched."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from saq.job import Status
from sqlalchemy import select

from shared.client import ServiceClient
from shared.db import Database
from tests.conftest import redis_prefix
from tests.documents.conftest import documents_app, new_user_id, running_analysis, settings_for
from tests.support.tokens import TokenIssuer
from ultrai_documents.analysis.analyst import Analyst
from ultrai_documents.analysis.runner import JOB_FUNCTION, analysis_queue
from ultrai_documents.models import Analysis, AnalysisEvent, utcnow
from ultrai_documents.worker import ABANDONED, _heartbeat, _stop_heartbeat, settle_abandoned

API = "/api/v1/documents"


async def test_analyses_the_queue_gave_up_on_end_as_failed(
    tmp_dir: Path, issuer: TokenIssuer, fresh_db: str | None, redis_url: str | None
) -> None:
    if fresh_db is None or redis_url is None:
        pytest.skip("the queue runs on PostgreSQL and Redis (TEST_DATABASE_URL, TEST_REDIS_URL)")
    user = new_user_id()
    h = issuer.headers(user)
    async with documents_app(tmp_dir, issuer, fresh_db) as client:
        resp = await client.post(API, headers=h, files={"file": ("q.txt", b"queue bookkeeping", "text/plain")})
        assert resp.status_code == 201, resp.text
        doc = resp.json()["id"]
    settings = settings_for(
        tmp_dir,
        database_url=fresh_db,
        redis_url=redis_url,
        redis_key_prefix=redis_prefix("settle"),
        analysis_heartbeat_seconds=5,
    )
    db = Database(settings, "documents")
    llm = ServiceClient("llm", "http://127.0.0.1:9")
    queue = analysis_queue(settings)
    await queue.connect()
    stale, fresh = utcnow() - timedelta(minutes=5), utcnow()
    # given up by the engine (its job aborted for good); its job gone; its job waiting in the queue;
    # its worker alive (a fresh heartbeat) with no job to be seen.
    rows = {"a" * 32: stale, "b" * 32: stale, "c" * 32: stale, "d" * 32: fresh}
    try:
        async with db.sessions() as session:
            for analysis_id, beat in rows.items():
                session.add(running_analysis(analysis_id, doc, user, heartbeat_at=beat, attempt=3))
            await session.commit()
        aborted = await queue.enqueue(JOB_FUNCTION, key="a" * 32, analysis_id="a" * 32)
        assert aborted is not None
        await queue.finish(aborted, Status.ABORTED, error="swept")
        assert await queue.enqueue(JOB_FUNCTION, key="c" * 32, analysis_id="c" * 32) is not None

        analyst = Analyst(db.sessions, llm, settings)
        assert sorted(await settle_abandoned(queue, analyst, settings)) == ["a" * 32, "b" * 32]
        # Settled once: a second sweep finds nothing.
        assert await settle_abandoned(queue, analyst, settings) == []

        async with db.sessions() as session:
            status = {a.id: a for a in (await session.scalars(select(Analysis))).all()}
            events = (await session.scalars(select(AnalysisEvent))).all()
        assert status["a" * 32].status == "failed" and status["a" * 32].error == ABANDONED
        assert status["b" * 32].status == "failed" and status["b" * 32].finished_at is not None
        assert status["c" * 32].status == "running" and status["d" * 32].status == "running"
        assert sorted((e.analysis_id, e.event) for e in events) == [("a" * 32, "failed"), ("b" * 32, "failed")]
    finally:
        # SAQ's keys are named after the queue, outside the session's prefix: removed here.
        async for key in queue.redis.scan_iter(match=f"saq:*{settings.redis_key_prefix}*"):
            await queue.redis.delete(key)
        await queue.disconnect()
        await llm.aclose()
        await db.dispose()


async def test_a_heartbeat_under_way_when_the_analysis_ends_is_finished_not_cancelled(
    tmp_dir: Path, issuer: TokenIssuer, fresh_db: str | None, redis_url: str | None
) -> None:
    """The worker stops an analysis' heartbeat by asking, not by cancelling it: a beat caught in its
    Redis update and database transaction when the analysis ends completes (a task cancelled inside
    a transaction can leave its connection, and the job's slot, waiting for good)."""
    if fresh_db is None or redis_url is None:
        pytest.skip("the queue runs on PostgreSQL and Redis (TEST_DATABASE_URL, TEST_REDIS_URL)")
    user = new_user_id()
    async with documents_app(tmp_dir, issuer, fresh_db) as client:
        resp = await client.post(API, headers=issuer.headers(user), files={"file": ("h.txt", b"beat", "text/plain")})
        assert resp.status_code == 201, resp.text
        doc = resp.json()["id"]
    settings = settings_for(tmp_dir, database_url=fresh_db, redis_url=redis_url, redis_key_prefix=redis_prefix("beat"))
    db = Database(settings, "documents")
    queue = analysis_queue(settings)
    await queue.connect()
    analysis_id = "e" * 32
    long_ago = utcnow() - timedelta(minutes=5)
    try:
        async with db.sessions() as session:
            session.add(running_analysis(analysis_id, doc, user, heartbeat_at=long_ago))
            await session.commit()
        job = await queue.enqueue(JOB_FUNCTION, key=analysis_id, analysis_id=analysis_id, heartbeat=1)
        assert job is not None
        # The beat's Redis update held until the analysis has ended (SAQ's job, not ours, is slowed).
        entered, release = asyncio.Event(), asyncio.Event()
        update = job.update
        finished: list[str] = []

        async def slow_update(**kwargs: object) -> None:
            entered.set()
            await release.wait()
            await update(**kwargs)
            finished.append("update")

        job.update = slow_update  # type: ignore[method-assign]
        analyst = Analyst(db.sessions, ServiceClient("llm", "http://127.0.0.1:9"), settings)
        stop = asyncio.Event()
        beat = asyncio.create_task(_heartbeat(job, analyst, analysis_id, stop))
        await asyncio.wait_for(entered.wait(), 10)
        # The analysis ends now; the beat is released a moment later.
        stopping = asyncio.create_task(_stop_heartbeat(beat, stop, job))
        await asyncio.sleep(0.2)
        assert not stopping.done()
        release.set()
        await asyncio.wait_for(stopping, 10)
        assert beat.done() and not beat.cancelled() and finished == ["update"]
        async with db.sessions() as session:
            row = (await session.execute(select(Analysis).where(Analysis.id == analysis_id))).scalar_one()
            assert row.heartbeat_at is not None and row.heartbeat_at > long_ago  # the beat's transaction ran
    finally:
        await queue.disconnect()
        await db.dispose()
