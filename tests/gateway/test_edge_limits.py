"""The gateway cuts off slow and greedy clients (ultrai_gateway/server.py), as a real process:
slowloris connections are closed at the header deadline while normal requests are served, a body
trickling in below the minimum rate is answered 408 and its upstream request ends, and connections
beyond the per-worker cap are answered 503 with Retry-After."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.gateway.test_proxy_streaming import Sink
from tests.support.waiting import eventually
from tools.stack import SERVICES, ServiceProcess, free_port

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT = 2.0


def start_gateway(workdir: Path, sink: Sink, **env: str) -> ServiceProcess:
    dead = f"http://127.0.0.1:{free_port()}"
    gateway = ServiceProcess(
        SERVICES["gateway"],
        free_port(),
        env={
            "DOCUMENTS_URL": sink.url,
            "AUTH_URL": dead,
            "LLM_URL": dead,
            "LOG_LEVEL": "WARNING",
            "EDGE_AUTH": "false",
            "HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
            "BODY_RATE_WINDOW_SECONDS": "1",
            "BODY_MIN_BYTES_PER_SECOND": "1000",
            **env,
        },
        log_path=workdir / "gateway.log",
    ).start()
    gateway.wait_ready()
    return gateway


@pytest.fixture(scope="module")
def sink(tmp_path_factory) -> Iterator[Sink]:
    sink = Sink(tmp_path_factory.mktemp("edge"))
    sink.wait()
    try:
        yield sink
    finally:
        sink.stop()


async def _read_all(reader: asyncio.StreamReader, limit: float) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(65536), timeout=limit)
    except TimeoutError:
        return b""


async def _slowloris(port: int, drip_every: float, lifetime: float) -> tuple[bytes, float]:
    """A connection that sends a request line, then one header byte every ``drip_every`` seconds.
    Returns what the gateway answered and when the gateway closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    opened = time.monotonic()
    writer.write(b"GET /live HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
    answer = b""
    try:
        while time.monotonic() - opened < lifetime:
            chunk = await _read_all(reader, drip_every)
            if chunk:
                answer += chunk
                rest = await _read_all(reader, 1.0)
                answer += rest
                break
            if reader.at_eof():
                break
            writer.write(b"a")
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        closed_after = time.monotonic() - opened
        writer.close()
    return answer, closed_after


def test_slowloris_connections_are_closed_at_the_header_deadline(sink: Sink, tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, sink)
    try:
        proc = psutil.Process(gateway.proc.pid)
        baseline = proc.num_fds()

        async def run() -> tuple[list[tuple[bytes, float]], list[int], int]:
            slow = [asyncio.create_task(_slowloris(gateway.port, 0.5, 20.0)) for _ in range(800)]
            codes: list[int] = []
            peak = 0
            async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
                deadline = time.monotonic() + HEADER_TIMEOUT + 1
                while time.monotonic() < deadline:
                    started = time.perf_counter()
                    codes.append((await client.get("/live")).status_code)
                    took.append(time.perf_counter() - started)
                    peak = max(peak, proc.num_fds())
                    await asyncio.sleep(0.02)
            return await asyncio.gather(*slow), codes, peak

        took: list[float] = []
        results, codes, peak = asyncio.run(run())
        assert peak > baseline + 700, f"the slow connections were not all open at once ({baseline} -> {peak})"
        answered = [answer for answer, _ in results]
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answered), {a[:40] for a in answered}
        assert all(b"application/problem+json" in a for a in answered)
        assert codes and all(code == 200 for code in codes), codes
        # descriptors back to the baseline once the slow connections are gone
        eventually_fds = asyncio.run(
            eventually(_async(proc.num_fds), lambda n: n <= baseline + 2, what="gateway descriptors", timeout=10)
        )
        print(
            f"\n800 slowloris connections: descriptors {baseline} -> {peak} -> {eventually_fds}; "
            f"closed after {min(a for _, a in results):.2f}-{max(a for _, a in results):.2f} s; "
            f"{len(codes)} normal requests meanwhile, all 200: p50 {statistics.median(took) * 1000:.1f} ms, "
            f"p99 {sorted(took)[int(len(took) * 0.99)] * 1000:.1f} ms"
        )
    finally:
        gateway.stop()


def _async(fn):
    async def call():
        return fn()

    return call


async def _trickled_post(port: int, headers: bytes = b"") -> bytes:
    """A POST whose body trickles in at 40 B/s (far below 1000 B/s): the gateway's answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /api/v1/documents/sink HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: 100000\r\n" + headers + b"\r\n" + b"x" * 2000
    )
    await writer.drain()
    answer = b""
    for _ in range(40):  # 10 bytes every 0.25 s
        chunk = await _read_all(reader, 0.25)
        if chunk:
            answer = chunk + await _read_all(reader, 1.0)
            break
        try:
            writer.write(b"y" * 10)
            await writer.drain()
        except (ConnectionError, OSError):
            break
    writer.close()
    return answer


def _head(answer: bytes) -> dict[str, str]:
    lines = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}


def test_a_body_below_the_minimum_rate_gets_408_and_its_upstream_request_ends(sink: Sink, tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, sink)
    try:
        answer = asyncio.run(_trickled_post(gateway.port))
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert body["status"] == 408 and "bytes per second" in body["detail"]
        # the sink's request ended: the upstream connection is no longer held by the slow client
        inflight = asyncio.run(
            eventually(
                _async(lambda: httpx.get(sink.url + "/api/v1/documents/inflight").json()["inflight"]),
                lambda n: n == 0,
                what="the upstream request to end",
                timeout=10,
            )
        )
        assert inflight == 0
        # a body at a normal pace still goes through
        resp = httpx.post(gateway.url + "/api/v1/documents/sink", content=b"z" * 300_000, timeout=10)
        assert resp.status_code == 200 and resp.json()["bytes"] == 300_000
    finally:
        gateway.stop()


def test_the_408_for_a_trickling_body_carries_cors_headers_for_an_allowed_origin(sink: Sink, tmp_path: Path) -> None:
    """A browser on the app's origin can read the 408 (problem+json) instead of a network error;
    another origin gets no CORS grant."""
    app = "http://app.example"
    gateway = start_gateway(tmp_path, sink, CORS_ORIGINS=app)

    async def both() -> list[bytes]:
        return list(
            await asyncio.gather(
                _trickled_post(gateway.port, b"Origin: " + app.encode() + b"\r\n"),
                _trickled_post(gateway.port, b"Origin: http://elsewhere.example\r\n"),
            )
        )

    try:
        allowed, other = asyncio.run(both())
        assert allowed.startswith(b"HTTP/1.1 408 "), allowed[:200]
        head = _head(allowed)
        assert head["access-control-allow-origin"] == app
        assert head["access-control-allow-credentials"] == "true"
        assert "retry-after" in head["access-control-expose-headers"].lower()
        assert head["vary"] == "Origin" and head["content-type"] == "application/problem+json"
        assert other.startswith(b"HTTP/1.1 408 "), other[:200]
        head = _head(other)
        assert "access-control-allow-origin" not in head and head["vary"] == "Origin"
    finally:
        gateway.stop()


def test_connections_beyond_the_cap_get_503_with_retry_after(sink: Sink, tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, sink, MAX_CONNECTIONS="20", HEADER_TIMEOUT_SECONDS="30")
    try:

        async def run() -> list[bytes]:
            held = [await asyncio.open_connection("127.0.0.1", gateway.port) for _ in range(20)]
            extra = [await asyncio.open_connection("127.0.0.1", gateway.port) for _ in range(5)]
            answers = [await _read_all(reader, 3.0) for reader, _ in extra]
            for _, writer in held + extra:
                writer.close()
            return answers

        answers = asyncio.run(run())
        assert all(a.startswith(b"HTTP/1.1 503 ") for a in answers), answers
        assert all(b"retry-after: 1" in a.lower() for a in answers)
        # once the held connections are gone, the gateway serves again
        assert httpx.get(gateway.url + "/live", timeout=5).status_code == 200
    finally:
        gateway.stop()


def test_a_full_upstream_pool_is_a_quick_503_not_a_hang(sink: Sink, tmp_path: Path) -> None:
    """One connection to the service, held by a slow upload: the next request waits at most
    UPSTREAM_POOL_TIMEOUT for it, then gets 503 with Retry-After; it is served once the pool frees."""
    gateway = start_gateway(
        tmp_path, sink, UPSTREAM_MAX_CONNECTIONS="1", UPSTREAM_POOL_TIMEOUT="0.3", BODY_MIN_BYTES_PER_SECOND="0"
    )
    try:

        async def run() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
            release = asyncio.Event()

            async def slow_body():  # type: ignore[no-untyped-def]
                yield b"x" * 70_000  # over the size the gateway sends in one piece: it streams
                await release.wait()
                yield b"y"

            async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
                upload = asyncio.create_task(client.post("/api/v1/documents/sink", content=slow_body()))
                await eventually(
                    _async(lambda: httpx.get(sink.url + "/api/v1/documents/inflight").json()["inflight"]),
                    lambda n: n == 1,
                    what="the slow upload to hold the connection",
                )
                busy = await client.get("/api/v1/documents/echo-id")
                release.set()
                done = await upload
                after = await client.get("/api/v1/documents/echo-id")
            return busy, done, after

        busy, done, after = asyncio.run(run())
        assert busy.status_code == 503, busy.text
        assert busy.headers["retry-after"] == "1"
        assert busy.json()["service"] == "documents"
        assert done.status_code == 200 and done.json()["bytes"] == 70_001
        assert after.status_code == 200
    finally:
        gateway.stop()


def _raw_get(port: int, path: str, headers: str = "Connection: close\r\n") -> tuple[int, bytes]:
    """A GET of ``path`` exactly as written (HTTP clients resolve dot segments before sending)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: gateway\r\n{headers}\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_a_path_with_dot_segments_is_refused_not_resolved_past_the_edge_check(sink: Sink, tmp_path: Path) -> None:
    """The edge check reads the path as received; the proxy's client resolved "." and ".." before
    sending it on, so "/.well-known/../<route>" passed as public (the public keys' prefix) and reached
    the route behind it unchecked (RFC 3986 §5.2.4, a parser differential). Such a path is refused."""
    gateway = start_gateway(tmp_path, sink, EDGE_AUTH="true", AUTH_URL=sink.url)
    try:
        for path in (
            "/.well-known/../api/v1/documents/echo-id",
            "/.well-known/%2e%2e/api/v1/documents/echo-id",
            "/api/v1/documents/./echo-id",
            "/api/v1/documents/echo-id/..",
        ):
            status, body = _raw_get(gateway.port, path)
            assert status == 400, (path, status, body[:200])
            assert json.loads(body)["status"] == 400
        # Dots inside a segment are a name, not a step: still the route's own answer.
        status, _ = _raw_get(gateway.port, "/api/v1/documents/echo-id..")
        assert status == 401
        # A WebSocket handshake on such a path is refused too, before it is accepted.
        upgrade = (
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        )
        status, body = _raw_get(gateway.port, "/api/v1/documents/../documents/ws/echo", upgrade)
        assert status == 400 and json.loads(body)["status"] == 400, body[:200]
    finally:
        gateway.stop()


def test_the_service_routes_the_path_the_gateway_checked(sink: Sink, tmp_path: Path) -> None:
    """The path goes upstream as the client sent it, not re-parsed from its decoded form: a "%3F" or
    "%23" made a query or a fragment of the rest, so "/api/v1/documents%3F", not an upload at the
    gateway (no per-account slot taken), was one upstream."""
    gateway = start_gateway(tmp_path, sink)
    try:
        for tail in ("%3F", "%23x", "%3Fa=b"):
            path = "/api/v1/documents/echo-id" + tail
            status, body = _raw_get(gateway.port, path)
            assert status == 404, (path, status, body[:200])  # the sink has no such route
        # Encoded the same way on both sides, a path still reaches its route, and the query follows.
        assert _raw_get(gateway.port, "/api/v1/documents%2Fecho-id")[0] == 200
        status, body = _raw_get(gateway.port, "/api/v1/documents/blob?n=5&x=%20y")
        assert status == 200 and body.endswith(b"\xab" * 5)
    finally:
        gateway.stop()
