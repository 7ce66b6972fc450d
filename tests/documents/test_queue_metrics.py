"""The analysis queue's metrics on documents' /metrics, in process on real Redis: the SAQ worker
running inside the app (ANALYSIS_WEB_CONSUMES) records each delivery into the Redis hash, and the
scrape reads it with the queue's depth. Without Redis, /metrics answers without them.
(The same among real processes, with separate workers: tests/documents/test_queue_e2e.py.)"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from saq import Queue
from saq.job import Job, Status

from tests.conftest import redis_prefix
from tests.documents.conftest import documents_app, settings_for
from tests.support.tokens import TokenIssuer
from tests.support.waiting import eventually
from ultrai_documents.analysis.metrics import metrics_key
from ultrai_documents.analysis.runner import JOB_FUNCTION, analysis_queue

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    """/metrics as {(sample name, sorted labels): value}."""
    resp = await client.get("/metrics")
    assert resp.status_code == 200, resp.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
async def prefix(redis_url: str | None) -> AsyncIterator[str]:
    if redis_url is None:
        pytest.skip("the queue runs on Redis (TEST_REDIS_URL)")
    value = redis_prefix("qmetrics")
    yield value
    # SAQ's keys are named after the queue, outside the session's prefix: removed here.
    queue = Queue.from_url(redis_url)
    try:
        async for key in queue.redis.scan_iter(match=f"saq:*{value}*"):  # type: ignore[attr-defined]
            await queue.redis.delete(key)  # type: ignore[attr-defined]
    finally:
        await queue.disconnect()


async def test_deliveries_are_counted_and_the_depth_read_at_scrape_time(
    tmp_dir: Path, issuer: TokenIssuer, redis_url: str | None, prefix: str
) -> None:
    """Three jobs for analyses that are not there: each delivery is taken and ends ``skipped``
    (nothing to claim). Two were first deliveries (their waits counted), one a redelivery (a retry).
    Then, with the in-app worker stopped, jobs waiting in the queue are its depth."""
    settings = settings_for(tmp_dir, redis_url=redis_url, redis_key_prefix=prefix, analysis_runner="queue")
    queue = analysis_queue(settings)
    await queue.connect()
    try:
        async with documents_app(
            tmp_dir,
            issuer,
            redis_url=redis_url,
            redis_key_prefix=prefix,
            analysis_runner="queue",
            analysis_web_consumes=True,
            # SAQ's stop waits for its timers' sleep: a short sweep period, a quick stop.
            analysis_sweep_seconds=1,
        ) as client:
            before = await scrape(client)
            assert sample(before, "ultrai_analysis_runs_total", outcome="skipped") == 0
            assert sample(before, "ultrai_analysis_queue_wait_seconds_count") == 0
            ids = [secrets.token_hex(16) for _ in range(3)]
            for analysis_id in ids[:2]:
                await queue.enqueue(JOB_FUNCTION, key=analysis_id, analysis_id=analysis_id)
            # A redelivery: SAQ counts this one its second attempt.
            await queue.enqueue(Job(JOB_FUNCTION, kwargs={"analysis_id": ids[2]}, key=ids[2], attempts=1))
            for analysis_id in ids:
                await eventually(
                    lambda a=analysis_id: queue.job(a),  # type: ignore[misc]
                    lambda j: j is not None and j.status == Status.COMPLETE,
                    what=f"job {analysis_id} done",
                )
            # The job's result is how the delivery ended.
            assert [(await queue.job(a)).result for a in ids] == ["skipped"] * 3  # type: ignore[union-attr]
            after = await eventually(
                lambda: scrape(client),
                lambda s: sample(s, "ultrai_analysis_runs_total", outcome="skipped") == 3,
                what="three deliveries counted",
            )
        assert sample(after, "ultrai_analysis_retries_total") == 1
        assert sample(after, "ultrai_analysis_queue_wait_seconds_count") == 2
        assert sample(after, "ultrai_analysis_queue_wait_seconds_bucket", le="+Inf") == 2
        assert sample(after, "ultrai_analysis_run_seconds_count") == 3
        assert sample(after, "ultrai_analysis_run_seconds_sum") > 0
        assert sample(after, "ultrai_analysis_runs_total", outcome="completed") == 0
        # The buckets are cumulative and end at the count.
        waits = sorted(
            (float(dict(labels)["le"]), value)
            for (name, labels), value in after.items()
            if name == "ultrai_analysis_queue_wait_seconds_bucket"
        )
        assert [v for _, v in waits] == sorted(v for _, v in waits) and waits[-1][1] == 2

        # No worker now: what is enqueued waits, and is the queue's depth.
        async with documents_app(
            tmp_dir, issuer, redis_url=redis_url, redis_key_prefix=prefix, analysis_runner="queue"
        ) as client:
            for _ in range(2):
                analysis_id = secrets.token_hex(16)
                await queue.enqueue(JOB_FUNCTION, key=analysis_id, analysis_id=analysis_id)
            waiting = await scrape(client)
            assert sample(waiting, "ultrai_analysis_queue_depth", state="queued") == 2
            assert sample(waiting, "ultrai_analysis_queue_depth", state="active") == 0
            # What the workers recorded stays (another instance shows the same).
            assert sample(waiting, "ultrai_analysis_runs_total", outcome="skipped") == 3
    finally:
        await queue.redis.delete(metrics_key(prefix))  # type: ignore[attr-defined]
        await queue.disconnect()


async def test_without_redis_metrics_answer_without_the_queue(tmp_dir: Path, issuer: TokenIssuer) -> None:
    """Redis does not answer (nothing listens on its port): /metrics still answers 200, with the
    service's own metrics and without the queue's."""
    async with documents_app(
        tmp_dir,
        issuer,
        redis_url="redis://127.0.0.1:9/0",
        redis_key_prefix="nowhere",
        analysis_runner="queue",
    ) as client:
        assert (await client.get("/live")).status_code == 200
        resp = await client.get("/metrics")
        assert resp.status_code == 200
        assert "http_requests_total" in resp.text
        assert "ultrai_analysis" not in resp.text
