"""The gateway's HTTP protocol: uvicorn's httptools protocol with the limits a public edge needs.

The gateway faces the internet, and an ASGI application only sees a request once its headers are
complete, so what a slow or greedy client does before that is the server's to limit:
- a deadline for the request line and headers (``HEADER_TIMEOUT_SECONDS``): a connection that has
  not sent complete headers in time (slowloris) is closed, with a 408 when nothing was answered yet;
- a minimum rate for request bodies (``BODY_MIN_BYTES_PER_SECOND`` over ``BODY_RATE_WINDOW_SECONDS``):
  a body that trickles in slower is answered 408 and the connection closed, which ends the proxied
  request and frees its upstream connection; time the application itself holds the body back
  (flow control) does not count against the client. The request's headers are known by then, so
  the 408 carries the CORS headers the application would have added (a browser reads the problem
  instead of an opaque network error);
- a cap on open connections per worker (``MAX_CONNECTIONS``): one more is answered 503 with
  Retry-After at once and closed, instead of holding a descriptor each until the process runs out.
  It is answered before any request is read, so it carries no CORS header (no origin is known;
  a browser sees a network error and its retry succeeds once a connection is free).
Idle keep-alive connections are closed by uvicorn itself (``--timeout-keep-alive``, 5 s).

A WebSocket upgrade hands the connection to uvicorn's WebSocket protocol (the ``websockets``
library); from then on none of these timers runs on it (``handle_websocket_upgrade``), and the
connection still counts against the cap, as uvicorn's WebSocket protocol joins the same set of
connections. Its idle limit is the gateway's own (``ultrai_gateway.websocket``).

uvicorn takes it by name: ``--http ultrai_gateway.server:EdgeProtocol``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.metrics import REGISTRY
from shared.settings import load_settings
from ultrai_gateway.cors import ProblemCORSMiddleware, edge_cors
from ultrai_gateway.routes import METHODS
from ultrai_gateway.settings import GatewaySettings

log = logging.getLogger("ultrai_gateway.server")

EDGE_CLOSED = Counter(
    "gateway_connections_closed_total",
    "Client connections the gateway closed itself, by reason",
    ["reason"],
    registry=REGISTRY,
)
_SETTINGS: GatewaySettings | None = None
_CORS: ProblemCORSMiddleware | None = None


def _settings() -> GatewaySettings:
    global _SETTINGS
    if _SETTINGS is None:
        _SETTINGS = load_settings(GatewaySettings, "gateway")
    return _SETTINGS


def _cors_headers(raw_request_headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The CORS headers of an answer to this request, as the application's outer layer adds them."""
    global _CORS
    origin = next((v for k, v in raw_request_headers if k.lower() == b"origin"), None)
    if origin is None:
        return []
    if _CORS is None:
        _CORS = edge_cors(_settings(), METHODS)
    allowed = _CORS.answer_headers(origin.decode("latin-1"))
    return [*((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in allowed.items()), (b"vary", b"Origin")]


def problem_bytes(
    status: int,
    reason: bytes,
    detail: str,
    retry_after: int | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> bytes:
    """A complete HTTP/1.1 answer with a problem+json body, closing the connection."""
    body = json.dumps(
        {"type": "about:blank", "title": reason.decode(), "status": status, "detail": detail}, separators=(",", ":")
    ).encode()
    head = [
        b"HTTP/1.1 %d %s\r\n" % (status, reason),
        b"content-type: application/problem+json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n",
    ]
    if retry_after is not None:
        head.append(b"retry-after: %d\r\n" % retry_after)
    head.extend(b"%s: %s\r\n" % (k, v) for k, v in headers or [])
    return b"".join([*head, b"\r\n", body])


class EdgeProtocol(HttpToolsProtocol):
    """One client connection, with the header deadline, the body rate and the connection cap."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = _settings()
        self._header_timeout = settings.header_timeout_seconds
        self._min_rate = settings.body_min_bytes_per_second
        self._window = settings.body_rate_window_seconds
        self._max_connections = settings.max_connections
        self._deadline: asyncio.TimerHandle | None = None
        self._rate_check: asyncio.TimerHandle | None = None
        self._answered = False  # a response (or its start) went out for the current request
        self._body_bytes = 0
        self._window_bytes = 0

    # ---- connection ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            EDGE_CLOSED.labels("connection_cap").inc()
            transport.write(
                problem_bytes(
                    503, b"Service Unavailable", "The gateway has too many open connections; retry shortly.", 1
                )
            )
            transport.close()
            return
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        # The transport becomes the WebSocket protocol's: this protocol's connection_lost, which
        # cancels the header deadline and the body-rate check, will never be called.
        self._cancel_timers()
        super().handle_websocket_upgrade()

    def _cancel_timers(self) -> None:
        for handle in (self._deadline, self._rate_check):
            if handle is not None:
                handle.cancel()
        self._deadline = self._rate_check = None

    # ---- the request line and headers ---------------------------------------------------------
    def _arm_header_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self._header_timeout, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        EDGE_CLOSED.labels("header_timeout").inc()
        if self.cycle is None or self.cycle.response_complete:
            self._close_with(408, "The request line and headers did not arrive in time.")
        else:
            self.transport.close()

    def on_headers_complete(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().on_headers_complete()
        self._body_bytes = self._window_bytes = 0
        if self._min_rate > 0 and self.cycle is not None and self.cycle.more_body:
            self._rate_check = self.loop.call_later(self._window, self._check_body_rate)

    # ---- the body -----------------------------------------------------------------------------
    def on_body(self, body: bytes) -> None:
        self._window_bytes += len(body)
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._rate_check is not None:
            self._rate_check.cancel()
            self._rate_check = None
        super().on_message_complete()

    def _check_body_rate(self) -> None:
        self._rate_check = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None or not cycle.more_body:
            return
        received, self._window_bytes = self._window_bytes, 0
        # The application holding the body back (flow control) is not the client's slowness.
        if not self.flow.read_paused and received < self._min_rate * self._window:
            EDGE_CLOSED.labels("body_too_slow").inc()
            if cycle.response_started:
                self.transport.close()
            else:
                cycle.response_started = True  # the application's own answer, if any, is not sent
                self._close_with(
                    408,
                    f"The request body arrived slower than {self._min_rate:g} bytes per second.",
                    _cors_headers(cycle.scope["headers"]),
                )
            return
        self._rate_check = self.loop.call_later(self._window, self._check_body_rate)

    # ---- the next request on a kept-alive connection ------------------------------------------
    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_deadline()

    def _close_with(self, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        reason = b"Request Timeout" if status == 408 else b"Service Unavailable"
        self.transport.write(problem_bytes(status, reason, detail, headers=headers))
        self.transport.close()
        log.info("closed a client connection (%d): %s", status, detail)
