"""The documents service among the real processes: uploads and analyses through the gateway, the
llm service pointed at the fake OpenAI-compatible provider, and body limits on a real socket."""

from __future__ import annotations

import asyncio
import json
import select
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import running_stack, stack_env
from tests.documents.conftest import make_pdf
from tests.fakes.openai_server import FakeOpenAI
from tests.support.logs import read, wait_for_log
from tests.support.users import bearer, new_access_token
from tests.support.waiting import eventually
from tools.stack import Stack

pytestmark = pytest.mark.e2e

API = "/api/v1/documents"
MODELS = ["doc-alpha", "doc-beta", "doc-synth", "doc-broken", "doc-down", "doc-map", "doc-verbose"]
UPLOAD_LIMIT = 1_000_000
DOCS_ENV = {
    "CHUNK_TOKENS": "200",
    "CHUNK_OVERLAP_TOKENS": "20",
    # Documents past 400 tokens are analysed chunk by chunk (map-reduce).
    "ANALYSIS_CONTEXT_TOKENS": "400",
    "SSE_POLL_SECONDS": "0.05",
}
LLM_ENV = {"LLM_NUM_RETRIES": "0", "LLM_TIMEOUT": "10", "LLM_ALLOWED_FAILS": "100", "ENABLE_CACHE": "false"}


@pytest.fixture(scope="module")
async def docs_stack(pg_databases, redis_url, fake_provider: FakeOpenAI) -> AsyncIterator[Stack]:
    def models(workdir: Path) -> dict[str, str]:
        entries = [fake_provider.model_entry(m) for m in MODELS]
        # A model with a small context window: documents past half of it are map-reduced for it.
        small = fake_provider.model_entry("doc-small")
        small["model_info"] = {"max_input_tokens": 300}
        models_file = workdir / "models.json"
        models_file.write_text(json.dumps({"model_list": [*entries, small]}))
        return {"LLM_MODELS_FILE": str(models_file)}

    env = {**await stack_env(pg_databases, redis_url, "docs"), **LLM_ENV}
    # The gateway's edge check refuses first (at the limit); the documents service's own check,
    # tested on its own port, at twice that. (With the same limit on both, a body refused by the
    # service mid-stream reaches the gateway as a reset connection: a 502, not the 413.)
    env["MAX_UPLOAD_BYTES"] = str(UPLOAD_LIMIT)
    documents_env = {**DOCS_ENV, "MAX_UPLOAD_BYTES": str(2 * UPLOAD_LIMIT)}
    async with running_stack(env, per_service_env={"documents": documents_env}, files=models) as st:
        yield st


@pytest.fixture
async def gateway(docs_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    headers = bearer(await new_access_token(docs_stack.url("gateway"), "docs"))
    async with httpx.AsyncClient(base_url=docs_stack.url("gateway"), headers=headers, timeout=60) as client:
        yield client


async def _upload(client: httpx.AsyncClient, data: bytes, name: str) -> dict[str, Any]:
    resp = await client.post(API, files={"file": (name, data, "application/octet-stream")})
    assert resp.status_code == 201, resp.text
    return resp.json()


async def _events(client: httpx.AsyncClient, url: str) -> list[tuple[str, dict]]:
    """Follow the analysis' server-sent events to the end."""
    events: list[tuple[str, dict]] = []
    async with client.stream("GET", url + "/events") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        name = None
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name or "message", json.loads(line[6:])))
    return events


async def test_analysis_end_to_end_through_the_gateway(gateway: httpx.AsyncClient, fake_provider: FakeOpenAI) -> None:
    fake_provider.behave("doc-alpha", text="Alpha: the report says revenue grew.")
    fake_provider.behave("doc-beta", text="Beta: revenue grew by ten percent.")
    fake_provider.behave("doc-synth", text="Synthesis: revenue grew (by ten percent).")
    doc = await _upload(gateway, make_pdf(["Quarterly report.", "Revenue grew by ten percent."]), "q.pdf")
    body = {"kind": "summary", "models": ["doc-alpha", "doc-beta"], "synthesis_model": "doc-synth"}
    resp = await gateway.post(f"{API}/{doc['id']}/analyses", json=body)
    assert resp.status_code == 202, resp.text
    url = resp.headers["location"]
    assert url == resp.json()["links"]["self"]
    assert resp.json()["status"] in ("queued", "running", "completed")

    events = await _events(gateway, url)
    names = [name for name, _ in events]
    assert names[0] == "status" and names[-1] == "completed"
    assert ("stage", "extraction") in [(n, d.get("stage")) for n, d in events]
    assert sorted(d["model"] for n, d in events if n == "model") == ["doc-alpha", "doc-beta"]
    assert "synthesis" in names

    final = (await gateway.get(url)).json()
    assert final["status"] == "completed"
    result = final["result"]
    assert result["answer"] == "Synthesis: revenue grew (by ten percent)."
    answers = {m["model"]: m for m in result["models"]}
    assert answers["doc-alpha"]["text"] == "Alpha: the report says revenue grew."
    assert answers["doc-beta"]["status"] == "ok"
    assert result["synthesis"]["model"] == "doc-synth" and result["synthesis"]["status"] == "ok"
    assert final["prompt_tokens"] > 0 and final["completion_tokens"] > 0
    assert all(m["latency_ms"] > 0 for m in result["models"])
    # The models were given the document's text.
    sent = json.dumps(fake_provider.calls("doc-alpha")[-1].body)
    assert "Revenue grew by ten percent." in sent

    # The same analysis again: the stored result, no new model call.
    calls = len(fake_provider.calls("doc-alpha"))
    again = await gateway.post(f"{API}/{doc['id']}/analyses", json=body)
    assert again.status_code == 200
    assert again.json()["id"] == final["id"] and again.json()["reused"] is True
    assert len(fake_provider.calls("doc-alpha")) == calls
    # fresh=true runs it again.
    fresh = await gateway.post(f"{API}/{doc['id']}/analyses", json={**body, "fresh": True})
    assert fresh.status_code == 202 and fresh.json()["id"] != final["id"]
    await _events(gateway, fresh.headers["location"])
    assert len(fake_provider.calls("doc-alpha")) == calls + 1


async def test_one_model_failing_still_completes_and_records_it(
    gateway: httpx.AsyncClient, fake_provider: FakeOpenAI
) -> None:
    fake_provider.behave("doc-alpha", text="Alpha answers.")
    fake_provider.behave("doc-broken", status=500)
    doc = await _upload(gateway, b"A short memo about the office move on Friday.", "memo.txt")
    body = {"kind": "qa", "question": "When is the move?", "models": ["doc-alpha", "doc-broken"]}
    resp = await gateway.post(f"{API}/{doc['id']}/analyses", json=body)
    assert resp.status_code == 202
    events = await _events(gateway, resp.headers["location"])
    assert events[-1][0] == "completed"
    assert events[-1][1]["failed_models"] == ["doc-broken"]
    failed = [d for n, d in events if n == "model" and d["model"] == "doc-broken"]
    assert failed and failed[0]["status"] == "error" and failed[0]["error"]

    final = (await gateway.get(resp.headers["location"])).json()
    assert final["status"] == "completed"
    models = {m["model"]: m for m in final["result"]["models"]}
    assert models["doc-alpha"]["status"] == "ok" and models["doc-alpha"]["text"] == "Alpha answers."
    assert models["doc-broken"]["status"] == "error" and models["doc-broken"]["text"] is None
    assert final["result"]["answer"] == "Alpha answers."


async def test_every_model_failing_fails_the_analysis(gateway: httpx.AsyncClient, fake_provider: FakeOpenAI) -> None:
    fake_provider.behave("doc-down", status=503)
    doc = await _upload(gateway, b"Nobody will read this memo today.", "down.txt")
    resp = await gateway.post(f"{API}/{doc['id']}/analyses", json={"kind": "summary", "models": ["doc-down"]})
    events = await _events(gateway, resp.headers["location"])
    assert events[-1][0] == "failed"
    final = (await gateway.get(resp.headers["location"])).json()
    assert final["status"] == "failed" and "doc-down" in final["error"]
    # A failed analysis is not reused: asking again runs it again.
    again = await gateway.post(f"{API}/{doc['id']}/analyses", json={"kind": "summary", "models": ["doc-down"]})
    assert again.status_code == 202 and again.json()["id"] != final["id"]
    await _events(gateway, again.headers["location"])


async def test_long_document_is_map_reduced(gateway: httpx.AsyncClient, fake_provider: FakeOpenAI) -> None:
    text = "\n\n".join(f"Chapter {i}. " + "The expedition crossed the valley and made camp. " * 10 for i in range(12))
    doc = await _upload(gateway, text.encode(), "long.txt")
    assert doc["chunk_count"] > 3
    before = len(fake_provider.calls("doc-map"))
    resp = await gateway.post(
        f"{API}/{doc['id']}/analyses", json={"kind": "extract", "fields": ["destination"], "models": ["doc-map"]}
    )
    events = await _events(gateway, resp.headers["location"])
    assert events[-1][0] == "completed", events[-1]
    final = (await gateway.get(resp.headers["location"])).json()
    assert final["result"]["map_reduce"] == {"chunks": doc["chunk_count"]}
    # One call per chunk (map), then at least one to combine (reduce).
    assert len(fake_provider.calls("doc-map")) - before >= doc["chunk_count"] + 1
    assert any(n == "progress" and d["stage"] == "map" for n, d in events)


async def test_notes_longer_than_half_the_budget_still_reduce(
    gateway: httpx.AsyncClient, fake_provider: FakeOpenAI
) -> None:
    # Every note (and every combination of notes) is about 250 tokens, past half of the budget
    # (ANALYSIS_CONTEXT_TOKENS, 400): grouped by the budget alone, each would be combined on its own,
    # round after round, never fewer. Two at a time, the notes halve each round.
    fake_provider.behave("doc-verbose", text="The expedition reached the far side of the valley. " * 20)
    text = "\n\n".join(f"Day {i}. " + "The expedition crossed the valley and made camp. " * 10 for i in range(8))
    doc = await _upload(gateway, text.encode(), "verbose.txt")
    chunks = doc["chunk_count"]
    assert chunks > 3
    before = len(fake_provider.calls("doc-verbose"))
    resp = await gateway.post(f"{API}/{doc['id']}/analyses", json={"kind": "summary", "models": ["doc-verbose"]})
    # A guard against the loop this test is about, not a timing: it ends in a few seconds.
    events = await asyncio.wait_for(_events(gateway, resp.headers["location"]), 120)
    assert events[-1][0] == "completed", events[-1]
    # One call per chunk, then chunks - 1 combinations of two (a pairwise tree).
    assert len(fake_provider.calls("doc-verbose")) - before == chunks + chunks - 1


async def test_map_reduce_follows_the_models_context_window(gateway: httpx.AsyncClient) -> None:
    # About 300 tokens: within ANALYSIS_CONTEXT_TOKENS (400), past half of doc-small's window (300).
    text = "\n\n".join(f"Note {i}. " + "The team shipped the release on time. " * 6 for i in range(6))
    doc = await _upload(gateway, text.encode(), "notes.txt")
    assert 150 < doc["token_count"] < 400 and doc["chunk_count"] > 1
    results = {}
    for model in ("doc-alpha", "doc-small"):
        resp = await gateway.post(f"{API}/{doc['id']}/analyses", json={"kind": "summary", "models": [model]})
        events = await _events(gateway, resp.headers["location"])
        assert events[-1][0] == "completed", events[-1]
        results[model] = (await gateway.get(resp.headers["location"])).json()["result"]
    assert results["doc-alpha"]["map_reduce"] is None
    assert results["doc-small"]["map_reduce"] == {"chunks": doc["chunk_count"]}


async def test_documents_refuse_calls_without_a_token(docs_stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for base in (docs_stack.url("documents"), docs_stack.url("gateway")):
            assert (await client.get(base + API)).status_code == 401
            assert (await client.post(base + API, files={"file": ("a.txt", b"x")})).status_code == 401


# -------------------------------------------------------------------- limits on a real socket


def _send_until_answer(port: int, head: bytes, chunks: Iterator[bytes]) -> tuple[bytes, int]:
    """Send ``head`` then chunks until the server answers (or closes); returns (answer, body bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sent = 0
    try:
        sock.sendall(head)
        for chunk in chunks:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        sock.settimeout(30)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
        return answer, sent
    finally:
        sock.close()


def _upload_head(token: str, boundary: str, length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST {API} HTTP/1.1\r\nHost: test\r\nAuthorization: {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n{framing}\r\n\r\n"
    ).encode()


def _body(boundary: str, total: int, chunked: bool) -> Iterator[bytes]:
    """A multipart body whose one file part goes on for ``total`` bytes, in 64 KiB pieces."""
    opening = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'.encode()
    pieces = [opening] + [b"a" * 65536] * (total // 65536)
    for piece in pieces:
        yield b"%x\r\n" % len(piece) + piece + b"\r\n" if chunked else piece


@pytest.mark.parametrize("target", ["documents", "gateway"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_upload_over_the_limit_refused_before_the_body_is_read(
    docs_stack: Stack, gateway: httpx.AsyncClient, target: str, chunked: bool
) -> None:
    token = gateway.headers["authorization"]
    total = 40 * UPLOAD_LIMIT  # what the client would send if nobody stopped it
    head = _upload_head(token, "xyzzy", None if chunked else total)
    body = _body("xyzzy", total, chunked)
    answer, sent = await asyncio.to_thread(_send_until_answer, docs_stack.ports[target], head, body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # Refused early: a declared length before any body byte; a chunked body soon after the limit.
    assert sent < total / 4, sent
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(docs_stack.url("documents") + "/live")).status_code == 200


async def test_file_just_over_the_limit_gets_its_413_not_a_reset(docs_stack: Stack, gateway: httpx.AsyncClient) -> None:
    """A body a little over the limit, sent whole before the answer: the client still reads the 413
    (the connection closed on unread bytes must not reset it away)."""
    limit = 2 * UPLOAD_LIMIT  # the documents service's own limit in this stack
    token = gateway.headers["authorization"]
    boundary = "justover"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'.encode()
        + b"a" * (limit + 20_000)
        + f"\r\n--{boundary}--\r\n".encode()
    )

    def send_all() -> bytes:
        sock = socket.create_connection(("127.0.0.1", docs_stack.ports["documents"]), timeout=30)
        try:
            sock.sendall(_upload_head(token, boundary, len(body)) + body)
            answer = b""
            while b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
            return answer
        except ConnectionResetError:
            return b"connection reset"
        finally:
            sock.close()

    for _ in range(5):
        answer = await asyncio.to_thread(send_all)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]


async def test_interrupted_upload_leaves_nothing_and_no_error(docs_stack: Stack, gateway: httpx.AsyncClient) -> None:
    token = gateway.headers["authorization"]
    head = _upload_head(token, "cut", 500_000)
    opening = b'--cut\r\nContent-Disposition: form-data; name="file"; filename="cut.txt"\r\n\r\n'

    def send_half() -> None:
        with socket.create_connection(("127.0.0.1", docs_stack.ports["documents"]), timeout=10) as sock:
            sock.sendall(head + opening + b"a" * 200_000)
            # and the client goes away mid-body

    log = docs_stack.workdir / "documents.log"
    before = len(read(log))
    await asyncio.to_thread(send_half)
    # The service has finished with the cut request (its log line is the evidence) ...
    await wait_for_log(log, "POST /api/v1/documents", since=before, timeout=30)
    tmp = docs_stack.workdir / "data" / "documents-tmp"
    # ... and then holds no temporary file of it, and is fine.
    await eventually(
        lambda: asyncio.to_thread(lambda: sorted(p.name for p in tmp.iterdir())),
        lambda left: left == [],
        what="the cut upload's temporary file removed",
    )
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(docs_stack.url("documents") + "/live")).status_code == 200
    assert not any((docs_stack.workdir / "data" / "documents-tmp").iterdir())
    written = read(log, before)
    assert "unhandled error" not in written and "Traceback" not in written
