"""The gateway as a real process in front of a real upstream: bodies stream both ways, SSE passes
event by event, request ids and forwarded addresses are the gateway's, a dead upstream is a 503."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.logs import read, wait_for_log_sync
from tools.stack import ROOT, SERVICES, ServiceProcess, free_port

pytestmark = pytest.mark.e2e
MB = 1024 * 1024


class Sink:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.log = workdir / "sink.log"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.gateway.sink_app:app",
                "--port",
                str(self.port),
                "--no-access-log",
            ],
            cwd=ROOT,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TimeoutError(self.log.read_text())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def start_proxied(workdir: Path, host: str = "127.0.0.1") -> tuple[ServiceProcess, Sink]:
    """The sink where the documents service would be, and a gateway in front of it that reaches
    the sink at ``host``."""
    sink = Sink(workdir)
    dead = f"http://127.0.0.1:{free_port()}"
    gateway = ServiceProcess(
        SERVICES["gateway"],
        free_port(),
        # No auth service here: the edge token check is off (tests/auth covers it).
        env={
            "DOCUMENTS_URL": sink.url.replace("127.0.0.1", host),
            "AUTH_URL": dead,
            "LLM_URL": dead,
            "LOG_LEVEL": "WARNING",
            "EDGE_AUTH": "false",
            "MAX_BODY_BYTES": str(200 * MB),
        },
        log_path=workdir / "gateway.log",
    ).start()
    sink.wait()
    gateway.wait_ready()
    return gateway, sink


@pytest.fixture(scope="module")
def proxied(tmp_path_factory) -> Iterator[tuple[ServiceProcess, Sink]]:
    gateway, sink = start_proxied(tmp_path_factory.mktemp("proxy"))
    try:
        yield gateway, sink
    finally:
        gateway.stop()
        sink.stop()


class PeakRSS:
    """Samples a process's resident memory in a thread while a transfer runs."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.baseline = self.proc.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / MB


def _body(size: int) -> Iterator[bytes]:
    chunk = bytes(range(256)) * 256  # 64 KiB
    sent = 0
    while sent < size:
        part = chunk[: min(len(chunk), size - sent)]
        sent += len(part)
        yield part


def _sha(size: int) -> str:
    digest = hashlib.sha256()
    for part in _body(size):
        digest.update(part)
    return digest.hexdigest()


@pytest.mark.parametrize("declared_length", [True, False], ids=["content-length", "chunked"])
def test_a_50mb_upload_streams_through_without_buffering(proxied, declared_length: bool) -> None:
    gateway, _ = proxied
    size = 50 * MB
    headers = {"content-type": "application/octet-stream"}
    if declared_length:
        headers["content-length"] = str(size)
    # warm up the connection pools so the baseline is steady
    httpx.get(gateway.url + "/api/v1/documents/echo-id", timeout=5)
    with PeakRSS(gateway.proc.pid) as rss:
        resp = httpx.post(gateway.url + "/api/v1/documents/sink", content=_body(size), headers=headers, timeout=60)
    assert resp.status_code == 200
    assert resp.json() == {"bytes": size, "sha256": _sha(size)}
    print(
        f"\ngateway RSS growth during a 50 MB upload ({'declared' if declared_length else 'chunked'}): "
        f"{rss.growth_mb:.1f} MB"
    )
    # Buffered, the body alone would add 50 MB; streamed, the growth is a few socket buffers.
    assert rss.growth_mb < 25


def test_a_50mb_download_streams_through_without_buffering(proxied) -> None:
    gateway, _ = proxied
    size = 50 * MB
    received = 0
    with PeakRSS(gateway.proc.pid) as rss:
        with httpx.stream("GET", gateway.url + f"/api/v1/documents/blob?n={size}", timeout=60) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-length"] == str(size)
            for chunk in resp.iter_raw():
                received += len(chunk)
    assert received == size
    print(f"\ngateway RSS growth during a 50 MB download: {rss.growth_mb:.1f} MB")
    assert rss.growth_mb < 25


def test_server_sent_events_pass_event_by_event(proxied) -> None:
    gateway, _ = proxied
    # The upstream holds the second event back until it is released: if the gateway buffered the
    # response, the first event would never arrive and this test would time out.
    with httpx.stream("GET", gateway.url + "/api/v1/documents/sse", timeout=20) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = resp.iter_lines()
        assert next(lines) == "event: first"
        assert next(lines) == "data: 1"
        released = httpx.post(gateway.url + "/api/v1/documents/release", timeout=5)
        assert released.status_code == 200
        rest = [line for line in lines if line]
    assert rest == ["event: second", "data: 2"]


def test_request_id_and_forwarded_for_are_set_by_the_gateway(proxied) -> None:
    gateway, _ = proxied
    resp = httpx.get(
        gateway.url + "/api/v1/documents/echo-id",
        headers={"X-Request-ID": "trace-me-42", "X-Forwarded-For": "6.6.6.6"},
        timeout=5,
    )
    seen = resp.json()
    assert seen["x-request-id"] == "trace-me-42"
    assert resp.headers["x-request-id"] == "trace-me-42"
    # A client cannot choose the address the services see.
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert "6.6.6.6" not in seen["x-forwarded-for"]


def test_a_dead_upstream_is_a_503_naming_it_while_others_work(proxied) -> None:
    gateway, _ = proxied
    since = len(read(gateway.log_path))
    resp = httpx.post(gateway.url + "/api/v1/auth/login", json={"email": "a@b.c"}, timeout=10)
    assert resp.status_code == 503
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["retry-after"]
    body = resp.json()
    assert body["service"] == "auth"
    assert "auth" in body["detail"]
    assert "127.0.0.1" not in resp.text  # no internal address in the error
    # Refused at connect, so answered at once (a timeout would be a 504); its time is a figure of
    # bench/bench_faults.py.
    wait_for_log_sync(gateway.log_path, "upstream auth unavailable: ClientConnectorError", since=since)
    assert httpx.get(gateway.url + "/api/v1/documents/echo-id", timeout=5).status_code == 200


def test_sigterm_lets_an_in_flight_request_finish(tmp_path) -> None:
    """Render sends SIGTERM on every deploy: a response under way must complete, not be cut."""
    gateway, sink = start_proxied(tmp_path)
    try:
        with httpx.stream("GET", gateway.url + "/api/v1/documents/sse", timeout=30) as resp:
            lines = resp.iter_lines()
            assert next(lines) == "event: first"
            gateway.proc.send_signal(15)  # SIGTERM while the response is half sent
            time.sleep(0.3)
            assert gateway.proc.poll() is None  # still draining the in-flight request
            # the gateway takes no new work while it drains
            with pytest.raises(httpx.ConnectError):
                httpx.get(gateway.url + "/live", timeout=2)
            httpx.post(sink.url + "/api/v1/documents/release", timeout=5)
            rest = [line for line in lines if line]
        assert rest == ["data: 1", "event: second", "data: 2"]
        # uvicorn re-raises the signal once drained, so the status is -SIGTERM (or 0): not a crash.
        assert gateway.proc.wait(15) in (0, -15)
    finally:
        gateway.stop()
        sink.stop()


def test_the_gateway_keeps_no_cookie_a_service_set_for_one_client(tmp_path) -> None:
    # By a host name, as on a private network: an HTTP client's cookie jar refuses only an IP's.
    gateway, sink = start_proxied(tmp_path, host="localhost")
    try:
        first = httpx.get(gateway.url + "/api/v1/documents/set-cookie", timeout=5)
        assert first.headers["set-cookie"].startswith("sink-session=")  # passed on to that client
        seen = httpx.get(gateway.url + "/api/v1/documents/echo-id", timeout=5).json()
        assert "cookie" not in seen  # another client's request carries none of it
    finally:
        gateway.stop()
        sink.stop()
