"""Analyses on the Redis queue among real processes: two documents instances, two analysis workers
(``python -m ultrai_documents.worker``), one gateway, llm on the fake provider, PostgreSQL and Redis.

Exactly once (every analysis, delivered twice, calls each model once), a worker killed with SIGKILL
mid-analysis (another worker finishes it from the answers already received), cancel while queued
and while running, an event stream on one instance following an analysis a worker runs, and the
queue's metrics (what the workers recorded, the depth) on both instances' /metrics, one of them
with two uvicorn workers (multiprocess mode).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from saq import Queue

from tests.conftest import running_stack, stack_env
from tests.documents.test_e2e import LLM_ENV
from tests.documents.test_queue_metrics import Samples, sample, scrape
from tests.fakes.openai_server import FakeOpenAI
from tests.support.users import bearer, new_access_token
from tests.support.waiting import eventually
from tools.stack import Stack
from ultrai_documents.analysis.runner import JOB_FUNCTION

pytestmark = pytest.mark.e2e

API = "/api/v1/documents"
# Analyses started across both instances in the exactly-once test, each delivered twice.
N_ANALYSES = 50
MODELS = ["q-alpha", "q-beta", "q-synth", "q-hold", "q-fast", "q-fail"]
# Each worker runs this many analyses at once: 2 workers, 4 slots (the cancel-while-queued test fills them).
WORKER_CONCURRENCY = 2
QUEUE_ENV = {
    "ANALYSIS_MAX_ACTIVE_PER_USER": "100",
    "ANALYSIS_WORKERS": str(WORKER_CONCURRENCY),
    # Short heartbeat and sweep: a killed worker is found within seconds.
    "ANALYSIS_HEARTBEAT_SECONDS": "2",
    "ANALYSIS_SWEEP_SECONDS": "1",
    "ANALYSIS_RUNNER": "queue",
    # Streams read the database on news only (the fallback read is longer than any wait here):
    # an event that reaches a stream was pushed.
    "SSE_FALLBACK_SECONDS": "60",
    # Only the workers run analyses: the documents instances enqueue them.
    "ANALYSIS_WEB_CONSUMES": "false",
}


@pytest.fixture(scope="module")
async def queue_stack(pg_databases, redis_url, fake_provider: FakeOpenAI) -> AsyncIterator[Stack]:
    if pg_databases is None or redis_url is None:
        pytest.skip("the queue runs on PostgreSQL and Redis (TEST_DATABASE_URL, TEST_REDIS_URL)")

    def models(workdir: Path) -> dict[str, str]:
        return {"LLM_MODELS_FILE": str(fake_provider.models_file(workdir / "models.json", MODELS))}

    # Held calls wait for the test, not for LLM_TIMEOUT: a held call that timed out on a loaded
    # machine would free its worker slot early (the cancel-while-queued test fills every slot).
    env = {**await stack_env(pg_databases, redis_url, "queue"), **LLM_ENV, "LLM_TIMEOUT": "300"}
    async with running_stack(env, per_service_env={"documents": QUEUE_ENV}, files=models) as st:
        # A second documents instance (two uvicorn workers: its /metrics in multiprocess mode) and
        # two analysis workers, on the same database and queue.
        multiproc = {"WEB_CONCURRENCY": "2", "PROMETHEUS_MULTIPROC_DIR": str(st.workdir / "metrics")}
        await asyncio.to_thread(st.start_extra, "documents", "documents-b", env=multiproc)
        await asyncio.to_thread(st.start_extra, "documents", "worker-1", worker=True)
        await asyncio.to_thread(st.start_extra, "documents", "worker-2", worker=True)
        yield st
    # SAQ's keys are named after the queue, outside the session's prefix: removed here.
    redis = Redis.from_url(redis_url)
    try:
        async for key in redis.scan_iter(match=f"saq:*{env['REDIS_KEY_PREFIX']}*"):
            await redis.delete(key)
    finally:
        await redis.aclose()


@pytest.fixture
async def clients(queue_stack: Stack) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """A client on each documents instance, as the same user."""
    headers = bearer(await new_access_token(queue_stack.url("gateway"), "queue"))
    async with (
        httpx.AsyncClient(base_url=queue_stack.url("documents"), headers=headers, timeout=60) as a,
        httpx.AsyncClient(base_url=queue_stack.procs["documents-b"].url, headers=headers, timeout=60) as b,
    ):
        yield a, b


@pytest.fixture
async def queue(queue_stack: Stack) -> AsyncIterator[Queue]:
    """The analysis queue itself, as the services name it."""
    q = Queue.from_url(queue_stack.env["REDIS_URL"], name=f"{queue_stack.env['REDIS_KEY_PREFIX']}:analyses")
    await q.connect()
    yield q
    await q.disconnect()


async def _document(client: httpx.AsyncClient) -> str:
    text = f"Queue memo {secrets.token_hex(8)}. The committee meets on Tuesdays and decides by vote."
    resp = await client.post(API, files={"file": ("memo.txt", text.encode(), "text/plain")})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def _start(
    client: httpx.AsyncClient, doc: str, question: str, models: list[str], synthesis: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "qa", "question": question, "models": models}
    if synthesis:
        body["synthesis_model"] = synthesis
    resp = await client.post(f"{API}/{doc}/analyses", json=body)
    assert resp.status_code == 202, resp.text
    return dict(resp.json())


async def _status(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    resp = await client.get(url)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def _until(client: httpx.AsyncClient, url: str, statuses: tuple[str, ...], timeout: float = 60) -> dict[str, Any]:
    return await eventually(
        lambda: _status(client, url), lambda a: a["status"] in statuses, what=f"{url} in {statuses}", timeout=timeout
    )


async def _events(client: httpx.AsyncClient, url: str, last_id: int = 0) -> list[tuple[int, str, dict[str, Any]]]:
    """The analysis' server-sent events to the end: (id, event, data)."""
    out: list[tuple[int, str, dict[str, Any]]] = []
    headers = {"Last-Event-ID": str(last_id)} if last_id else {}
    async with client.stream("GET", url + "/events", headers=headers) as resp:
        assert resp.status_code == 200
        event_id, name = 0, "message"
        async for line in resp.aiter_lines():
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                out.append((event_id, name, json.loads(line[6:])))
    return out


def _calls_for(fake: FakeOpenAI, marker: str, model: str | None = None) -> int:
    return sum(1 for c in fake.calls(model) if marker in json.dumps(c.body))


async def test_analyses_across_two_instances_and_two_workers_run_exactly_once(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], queue: Queue, fake_provider: FakeOpenAI
) -> None:
    """N analyses, half started on each instance, each also delivered a second time (a job of
    another key for the same analysis): every one completes, and the provider is asked exactly
    once per model per analysis."""
    a, b = clients
    for model in ("q-alpha", "q-beta", "q-synth"):
        fake_provider.behave(model, delay=0.05)
    doc = await _document(a)
    tag = secrets.token_hex(4)
    questions = [f"Exactly-once question {tag}-{i}?" for i in range(N_ANALYSES)]
    started = await asyncio.gather(
        *(_start(a if i % 2 else b, doc, q, ["q-alpha", "q-beta"], "q-synth") for i, q in enumerate(questions))
    )
    # A second delivery of every analysis, past the queue's own deduplication by key.
    for analysis in started:
        await queue.enqueue(JOB_FUNCTION, key=f"{analysis['id']}-again", analysis_id=analysis["id"], timeout=60)
    finals = await asyncio.gather(*(_until(a, s["links"]["self"], ("completed", "failed")) for s in started))
    assert [f["status"] for f in finals] == ["completed"] * N_ANALYSES
    for question in questions:
        for model in ("q-alpha", "q-beta", "q-synth"):
            assert _calls_for(fake_provider, question, model) == 1, (question, model)
    assert len(fake_provider.calls()) == 3 * N_ANALYSES
    # One run each: one "running" status, one event per model, one end.
    for analysis in started[:4]:
        names = [name for _, name, _ in await _events(b, analysis["links"]["self"])]
        assert names.count("status") == 2 and names.count("model") == 2 and names.count("completed") == 1, names


async def test_a_worker_killed_mid_analysis_is_replaced_by_the_other(
    queue_stack: Stack, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], queue: Queue, fake_provider: FakeOpenAI
) -> None:
    """SIGKILL the worker running an analysis (one model answered, one held at the provider): the
    engine's heartbeat and sweep hand the job to the other worker, which asks only the model that
    had not answered; no event and no usage is counted twice."""
    a, _ = clients
    gate = fake_provider.hold("q-hold")
    doc = await _document(a)
    question = f"Killed-worker question {secrets.token_hex(4)}?"
    analysis = await _start(a, doc, question, ["q-fast", "q-hold"], "q-synth")
    url = analysis["links"]["self"]
    try:
        # Mid-run: the fast model has answered (its event is recorded), the held one is asked.
        await eventually(
            lambda: _status(a, url), lambda s: s["prompt_tokens"] > 0, what="the fast model's answer", timeout=30
        )
        await eventually(
            lambda: _async(_calls_for(fake_provider, question, "q-hold")), lambda n: n == 1, what="the held call"
        )
        job = await queue.job(analysis["id"])
        assert job is not None and job.worker_id
        pid = int(job.worker_id.rsplit(":", 1)[1])
        victim = next(label for label, p in queue_stack.procs.items() if p.proc is not None and p.proc.pid == pid)
        assert victim.startswith("worker-")
        os.kill(pid, signal.SIGKILL)
        queue_stack.procs[victim].proc.wait(10)  # type: ignore[union-attr]
        # The other worker takes it over and asks the held model again (the killed call is lost).
        await eventually(
            lambda: _async(_calls_for(fake_provider, question, "q-hold")),
            lambda n: n == 2,
            what="the takeover's call",
            timeout=60,
        )
    finally:
        gate.set()
    final = await _until(a, url, ("completed", "failed"))
    assert final["status"] == "completed", final
    assert _calls_for(fake_provider, question, "q-fast") == 1
    assert _calls_for(fake_provider, question, "q-synth") == 1
    events = await _events(a, url)
    names = [name for _, name, _ in events]
    assert names.count("model") == 2 and names.count("synthesis") == 1 and names.count("completed") == 1, names
    assert [d for _, n, d in events if n == "status"] == [{"status": "queued"}, {"status": "running"}]
    assert names.count("stage") == 3, names  # extraction, models, synthesis: once each
    # Usage: each answer the analysis used, once.
    result = final["result"]
    used = [*result["models"], result["synthesis"]]
    assert final["prompt_tokens"] == sum(m["prompt_tokens"] for m in used)
    assert final["completion_tokens"] == sum(m["completion_tokens"] for m in used)
    # The stack keeps two workers for the tests after this one.
    await asyncio.to_thread(queue_stack.start_extra, "documents", f"{victim}-again", worker=True)


async def _async(value: Any) -> Any:
    return value


async def test_cancel_a_running_analysis(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], queue: Queue, fake_provider: FakeOpenAI
) -> None:
    """Cancelled mid-run (one model answered, one waiting on the provider): status cancelled at once,
    the stream ends with it, the synthesis is never asked, and the answered model's usage stays."""
    a, b = clients
    gate = fake_provider.hold("q-hold")
    doc = await _document(a)
    question = f"Cancel-running question {secrets.token_hex(4)}?"
    analysis = await _start(a, doc, question, ["q-fast", "q-hold"], "q-synth")
    url = analysis["links"]["self"]
    try:
        await eventually(
            lambda: _status(a, url), lambda s: s["prompt_tokens"] > 0, what="the fast model's answer", timeout=30
        )
        await eventually(
            lambda: _async(_calls_for(fake_provider, question, "q-hold")), lambda n: n == 1, what="the held call"
        )
        resp = await b.post(url + "/cancel")
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "cancelled"
        spent = resp.json()["prompt_tokens"]
        assert spent > 0  # the fast model's answer
        # The worker abandons the held call: the job ends as aborted.
        await eventually(
            lambda: queue.job(analysis["id"]),
            lambda j: j is not None and j.status.value in ("aborted", "complete"),
            what="the job's end",
            timeout=30,
        )
    finally:
        gate.set()
    final = await _status(a, url)
    assert final["status"] == "cancelled" and final["prompt_tokens"] == spent
    assert _calls_for(fake_provider, question, "q-synth") == 0
    names = [name for _, name, _ in await _events(a, url)]
    assert names[-1] == "cancelled" and "completed" not in names, names
    # Cancelled already: 409.
    again = await a.post(url + "/cancel")
    assert again.status_code == 409 and again.headers["content-type"].startswith("application/problem+json")


async def test_cancel_a_queued_analysis(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], fake_provider: FakeOpenAI
) -> None:
    """With every worker slot busy, an analysis waits in the queue; cancelled there, it never runs."""
    a, b = clients
    gate = fake_provider.hold("q-hold")
    doc = await _document(a)
    tag = secrets.token_hex(4)
    try:
        busy = [await _start(a, doc, f"Busy {tag}-{i}?", ["q-hold"]) for i in range(2 * WORKER_CONCURRENCY)]
        await eventually(
            lambda: _async(_calls_for(fake_provider, f"Busy {tag}-", "q-hold")),
            lambda n: n == 2 * WORKER_CONCURRENCY,
            what="every slot busy",
            timeout=30,
        )
        question = f"Queued question {tag}?"
        waiting = await _start(b, doc, question, ["q-fast"])
        held = [(await _status(a, x["links"]["self"]))["status"] for x in busy]
        assert held == ["running"] * len(busy), held
        assert (await _status(a, waiting["links"]["self"]))["status"] == "queued"
        resp = await a.post(waiting["links"]["self"] + "/cancel")
        assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    finally:
        gate.set()
    for analysis in busy:
        assert (await _until(a, analysis["links"]["self"], ("completed", "failed")))["status"] == "completed"
    final = await _status(b, waiting["links"]["self"])
    assert final["status"] == "cancelled" and final["started_at"] is None and final["prompt_tokens"] == 0
    assert _calls_for(fake_provider, question) == 0
    names = [name for _, name, _ in await _events(b, waiting["links"]["self"])]
    assert names == ["status", "cancelled"], names


async def test_an_event_stream_on_one_instance_follows_a_worker_in_order(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], fake_provider: FakeOpenAI
) -> None:
    """Started on instance B, run by a worker, followed live on instance A: A's stream has every
    event, in order, exactly as the database records them (a replay from the start), and a
    client reconnecting with Last-Event-ID gets the rest."""
    a, b = clients
    gate = fake_provider.hold("q-hold")
    doc = await _document(b)
    question = f"Streamed question {secrets.token_hex(4)}?"
    analysis = await _start(b, doc, question, ["q-alpha", "q-hold"], "q-synth")
    url = analysis["links"]["self"]
    live = asyncio.create_task(_events(a, url))
    try:
        await eventually(
            lambda: _async(_calls_for(fake_provider, question, "q-hold")), lambda n: n == 1, what="the held call"
        )
    finally:
        gate.set()
    streamed = await asyncio.wait_for(live, 30)
    ids = [event_id for event_id, _, _ in streamed]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    names = [name for _, name, _ in streamed]
    assert names[0] == "status" and names[-1] == "completed", names
    assert names.count("model") == 2 and names.count("synthesis") == 1
    assert names.index("synthesis") > max(i for i, n in enumerate(names) if n == "model")
    # The database is the record: a late client replays exactly what was streamed live.
    assert await _events(b, url) == streamed
    middle = ids[len(ids) // 2]
    assert await _events(a, url, last_id=middle) == [e for e in streamed if e[0] > middle]


async def test_the_queue_metrics_show_on_every_instance(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], fake_provider: FakeOpenAI
) -> None:
    """What the workers (separate processes) recorded and the queue's depth, read by either
    documents instance's /metrics: jobs waiting while every worker slot is busy, then the runs that
    completed, one that failed (its one model answers 500), their waits and run times."""
    a, b = clients
    gate = fake_provider.hold("q-hold")
    fake_provider.behave("q-fail", status=500)
    before = await scrape(a)
    doc = await _document(a)
    tag = secrets.token_hex(4)
    try:
        busy = [await _start(a, doc, f"Metrics busy {tag}-{i}?", ["q-hold"]) for i in range(2 * WORKER_CONCURRENCY)]
        await eventually(
            lambda: _async(_calls_for(fake_provider, f"Metrics busy {tag}-", "q-hold")),
            lambda n: n == 2 * WORKER_CONCURRENCY,
            what="every slot busy",
            timeout=30,
        )
        waiting = await _start(b, doc, f"Metrics waiting {tag}?", ["q-fast"])
        failing = await _start(b, doc, f"Metrics failing {tag}?", ["q-fail"])
        for client in (a, b):
            now = await scrape(client)
            assert sample(now, "ultrai_analysis_queue_depth", state="queued") >= 2, now
            assert sample(now, "ultrai_analysis_queue_depth", state="active") >= 2 * WORKER_CONCURRENCY
    finally:
        gate.set()
    for analysis in busy:
        assert (await _until(a, analysis["links"]["self"], ("completed", "failed")))["status"] == "completed"
    assert (await _until(a, waiting["links"]["self"], ("completed", "failed")))["status"] == "completed"
    assert (await _until(a, failing["links"]["self"], ("completed", "failed")))["status"] == "failed"
    ran = 2 * WORKER_CONCURRENCY + 2
    for client in (a, b):
        # A worker records a run just after its last event: the scrape may come first.
        after = await eventually(
            lambda c=client: scrape(c),  # type: ignore[misc]
            lambda s: _delta(s, before, "ultrai_analysis_run_seconds_count") >= ran,
            what="the runs recorded",
            timeout=30,
        )
        assert _delta(after, before, "ultrai_analysis_runs_total", outcome="completed") >= 2 * WORKER_CONCURRENCY + 1
        assert _delta(after, before, "ultrai_analysis_runs_total", outcome="failed") >= 1
        assert _delta(after, before, "ultrai_analysis_queue_wait_seconds_count") >= ran
        assert _delta(after, before, "ultrai_analysis_queue_wait_seconds_sum") > 0
        assert _delta(after, before, "ultrai_analysis_run_seconds_sum") > 0
        assert sample(after, "ultrai_analysis_queue_depth", state="queued") == 0


def _delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return sample(after, name, **labels) - sample(before, name, **labels)
