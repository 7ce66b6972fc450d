"""WebSockets through the gateway as a real process (with its own HTTP protocol class, as deployed),
in front of the sink's echo endpoint: messages both ways, close codes both ways, the CORS origin
rule at the handshake, the per-address rate limit, the idle timeout, and a long steady exchange
that loses nothing. The edge token check and the per-account slot are covered with the real llm
service behind the gateway (tests/llm/test_orchestrate_ws.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.gateway.test_proxy_streaming import Sink
from tests.support.waiting import eventually
from tools.stack import SERVICES, ServiceProcess, free_port

pytestmark = pytest.mark.e2e

ECHO = "/api/v1/documents/ws/echo"
ALLOWED = "http://app.example"
IDLE_SECONDS = 2


def start_gateway(workdir: Path, sink: Sink, **env: str) -> ServiceProcess:
    dead = f"http://127.0.0.1:{free_port()}"
    return ServiceProcess(
        SERVICES["gateway"],
        free_port(),
        env={
            "DOCUMENTS_URL": sink.url,
            "AUTH_URL": dead,
            "LLM_URL": dead,
            "LOG_LEVEL": "WARNING",
            "EDGE_AUTH": "false",
            "CORS_ORIGINS": ALLOWED,
            "CORS_ORIGIN_REGEX": r"https://[a-z0-9-]+\.preview\.example",
            "WEBSOCKET_IDLE_SECONDS": str(IDLE_SECONDS),
            # The HTTP protocol's timers are short: were they left running on an upgraded
            # connection, the long exchange below would be cut off.
            "HEADER_TIMEOUT_SECONDS": "1",
            "BODY_RATE_WINDOW_SECONDS": "1",
            **env,
        },
        log_path=workdir / f"gateway-{free_port()}.log",
    ).start()


@pytest.fixture(scope="module")
def sink(tmp_path_factory) -> Iterator[Sink]:
    sink = Sink(tmp_path_factory.mktemp("ws-sink"))
    sink.wait()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def gateway(sink: Sink, tmp_path_factory) -> Iterator[ServiceProcess]:
    gateway = start_gateway(tmp_path_factory.mktemp("ws-gateway"), sink)
    gateway.wait_ready()
    yield gateway
    gateway.stop()


def ws_url(gateway: ServiceProcess, path: str = ECHO) -> str:
    return gateway.url.replace("http://", "ws://") + path


async def closed(ws: ClientConnection) -> ConnectionClosed:
    """The close that ends ``ws`` (messages still on the way are skipped)."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await ws.recv()
    return info.value


async def last_close(sink: Sink) -> dict:
    async with httpx.AsyncClient() as client:
        return (await client.get(sink.url + "/api/v1/documents/ws/last-close")).json()


async def test_messages_pass_both_ways_as_text_and_binary(gateway: ServiceProcess) -> None:
    async with connect(ws_url(gateway)) as ws:
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        await ws.send(b"\x00\xff\x10")
        assert await ws.recv() == b"\x00\xff\x10"
        big = "x" * 200_000
        await ws.send(big)
        assert await ws.recv() == big


async def test_the_service_sees_the_gateways_request_id_and_forwarded_address(gateway: ServiceProcess) -> None:
    headers = {"X-Request-ID": "ws-trace-7", "X-Forwarded-For": "6.6.6.6"}
    async with connect(ws_url(gateway), additional_headers=headers) as ws:
        await ws.send("headers")
        seen = json.loads(await ws.recv())
    assert seen["x-request-id"] == "ws-trace-7"
    assert seen["x-forwarded-for"] == "127.0.0.1"  # the gateway's view, never the client's claim
    assert "sec-websocket-key" in seen  # the service's own handshake, not the client's key


async def test_a_close_code_from_the_service_reaches_the_client(gateway: ServiceProcess) -> None:
    async with connect(ws_url(gateway)) as ws:
        await ws.send("close:4321:done here")
        end = await closed(ws)
    assert end.rcvd is not None
    assert (end.rcvd.code, end.rcvd.reason) == (4321, "done here")


async def test_a_close_code_from_the_client_reaches_the_service(gateway: ServiceProcess, sink: Sink) -> None:
    async with connect(ws_url(gateway)) as ws:
        await ws.send("ping")
        assert await ws.recv() == "ping"
        await ws.close(4123, "client leaves")
    seen = await eventually(lambda: last_close(sink), lambda c: c.get("code") == 4123, what="the service saw the close")
    assert seen["reason"] == "client leaves"


async def test_an_origin_cors_does_not_allow_is_refused_at_the_handshake(gateway: ServiceProcess) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(ws_url(gateway), origin="http://evil.example"):
            pass
    response = info.value.response
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert json.loads(response.body)["status"] == 403
    # The listed origin and one the regex matches are let through.
    for origin in (ALLOWED, "https://pr-12.preview.example"):
        async with connect(ws_url(gateway), origin=origin) as ws:
            await ws.send(origin)
            assert await ws.recv() == origin


async def test_a_path_the_service_refuses_and_a_service_that_is_down(gateway: ServiceProcess) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(ws_url(gateway, "/api/v1/documents/ws/nowhere")):
            pass
    assert info.value.response.status_code == 403  # the service's refusal, passed on
    with pytest.raises(InvalidStatus) as info:
        async with connect(ws_url(gateway, "/api/v1/llm/ws")):  # nothing listens there
            pass
    assert info.value.response.status_code == 503
    assert json.loads(info.value.response.body)["status"] == 503


async def test_an_idle_socket_is_closed(gateway: ServiceProcess, sink: Sink) -> None:
    async with connect(ws_url(gateway)) as ws:
        await ws.send("one message, then silence")
        assert await ws.recv() == "one message, then silence"
        end = await closed(ws)
    assert end.rcvd is not None and end.rcvd.code == 4408
    seen = await eventually(lambda: last_close(sink), lambda c: c.get("code") is not None, what="the service closed")
    assert seen["code"] == 1001


async def test_handshakes_count_against_the_per_address_rate_limit(sink: Sink, tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, sink, RATE_LIMIT_PER_MINUTE="2")
    try:
        await asyncio.to_thread(gateway.wait_ready)
        for _ in range(2):
            async with connect(ws_url(gateway)) as ws:
                await ws.send("within the limit")
                assert await ws.recv() == "within the limit"
        with pytest.raises(InvalidStatus) as info:
            async with connect(ws_url(gateway)):
                pass
        assert info.value.response.status_code == 429
        assert int(info.value.response.headers["retry-after"]) > 0
    finally:
        gateway.stop()


@pytest.mark.slow
async def test_25_messages_a_second_for_a_minute_lose_nothing(gateway: ServiceProcess) -> None:
    """A client sending 25 messages a second for a minute through the gateway loses nothing: every
    message comes back, in order, text and binary alike."""
    count, interval = 25 * 60, 1 / 25
    sent: list[str | bytes] = [f"message {i}" if i % 2 == 0 else f"binary {i}".encode() for i in range(count)]
    received: list[str | bytes] = []
    async with connect(ws_url(gateway)) as ws:

        async def send_all() -> None:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i, message in enumerate(sent):
                await asyncio.sleep(max(0.0, start + i * interval - loop.time()))
                await ws.send(message)

        async def receive_all() -> None:
            while len(received) < count:
                received.append(await ws.recv())

        await asyncio.gather(send_all(), receive_all())
    assert received == sent
