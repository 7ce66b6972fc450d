"""One pure ASGI middleware for what every request needs: request id, security headers, metrics,
an access log line, one trailing slash made optional, and a cap on request bodies counted as they
arrive.

Every route answers with or without one trailing slash: the slash is taken off the path before
routing (never from ``/``), and the app factory turns Starlette's slash redirects off. A redirect
would name the service's own address, which a browser behind the gateway cannot reach (and CORS
would block).

The cap answers problem+json: a declared Content-Length over the limit is refused before the app
runs; a chunked body is cut off the moment it passes the limit (raised from ``receive`` as an
HTTPException, which FastAPI passes to the problem handler). Starlette's own ``max_body_size``
answers in plain text from outside our middleware, hence this one.

Pure ASGI (not BaseHTTPMiddleware) so streaming bodies pass through untouched and the per-request
cost stays in microseconds.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.context import request_id_var
from shared.errors import problem_response
from shared.metrics import LATENCY, REQUESTS

if TYPE_CHECKING:  # prometheus_client is imported by shared.metrics, once its mode is chosen
    from prometheus_client import Counter, Histogram

log = logging.getLogger("access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    # cross-origin, not same-site: CORP only governs no-cors loads (<img>, <a download>, <script>),
    # which carry cookies but never an Authorization header. The API answers only to bearer tokens,
    # and its one cookie (the refresh token) is scoped to /api/v1/auth and used only by POSTs that
    # return JSON, so a no-cors load from any site reaches nothing its page could not fetch itself.
    # same-site would only break the app's own <img>/downloads when app and API are on different
    # sites. Reading any answer from script still needs CORS, which names the allowed origins.
    (b"cross-origin-resource-policy", b"cross-origin"),
]
API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
_DOCS_PATHS = ("/docs", "/redoc")
_MAX_SERIES = 4096
_OWN_HEADERS = frozenset([b"x-request-id", API_CSP[0], HSTS[0], *(name for name, _ in SECURITY_HEADERS)])


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        service: str,
        *,
        max_body_size: int | None = 1_048_576,
        max_header_bytes: int = 32_768,
        body_limits: dict[str, int | None] | None = None,
        hsts: bool = False,
        metrics: bool = True,
        access_log: bool = True,
    ) -> None:
        self.app = app
        self.service = service
        self.max_body = max_body_size
        self.max_header_bytes = max_header_bytes
        # Longest prefix first, so a more specific limit wins.
        self.body_limits = sorted((body_limits or {}).items(), key=lambda kv: -len(kv[0]))
        self.hsts = hsts
        self.metrics = metrics
        self.access_log = access_log
        # The labelled series of each (method, route template, status), looked up once.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                strip_trailing_slash(scope)
            await self.app(scope, receive, send)
            return
        strip_trailing_slash(scope)
        rid = _request_id(scope)
        token = request_id_var.set(rid)
        path: str = scope["path"]
        started = time.perf_counter()
        status = 500
        extra_headers = self._response_headers(rid, path)
        started_response = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                # Ours replace any of the same name (a proxied response already carries them).
                headers = [h for h in message.get("headers", []) if h[0] not in _OWN_HEADERS]
                message["headers"] = headers + extra_headers
            await send(message)

        limit = self._limit_for(path)
        try:
            refusal = self._refusal(scope, limit)
            if refusal is not None:
                await refusal(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive if limit is None else _counted(receive, limit), send_wrapper)
        except Exception:
            # Answered here rather than by Starlette's outermost error middleware, so that the
            # 500 carries the request id and the security headers like every other response.
            log.exception("unhandled error in %s %s", scope["method"], path)
            if started_response:
                raise
            await problem_response(500, "An internal error occurred; the request id identifies it in the logs.")(
                scope, receive, send_wrapper
            )
        finally:
            self._record(scope, path, status, time.perf_counter() - started)
            request_id_var.reset(token)

    def _response_headers(self, rid: str, path: str) -> list[tuple[bytes, bytes]]:
        headers = [(b"x-request-id", rid.encode()), *SECURITY_HEADERS]
        if not path.startswith(_DOCS_PATHS):
            headers.append(API_CSP)
        if self.hsts:
            headers.append(HSTS)
        return headers

    def _refusal(self, scope: Scope, limit: int | None) -> Response | None:
        """The answer for a request refused before the app runs (headers or declared body too large)."""
        header_bytes = sum(len(k) + len(v) for k, v in scope["headers"])
        if header_bytes > self.max_header_bytes:
            return problem_response(
                431, f"The request headers are larger than the limit of {self.max_header_bytes} bytes."
            )
        declared = _content_length(scope) if limit is not None else None
        if limit is not None and declared is not None and declared > limit:
            # Not one byte of the body is read. No "Connection: close": a proxy in front (our
            # gateway) may still be sending the body, and a close with unread data resets the
            # connection before it reads this.
            return problem_response(413, f"The request body is larger than the limit of {limit} bytes.")
        return None

    def _record(self, scope: Scope, path: str, status: int, elapsed: float) -> None:
        route = _route_template(scope)
        if self.metrics:
            key = (scope["method"], route, status)
            series = self._series.get(key)
            if series is None:
                series = (
                    REQUESTS.labels(self.service, key[0], route, str(status)),
                    LATENCY.labels(self.service, key[0], route),
                )
                if len(self._series) < _MAX_SERIES:
                    self._series[key] = series
            series[0].inc()
            series[1].observe(elapsed)
        if self.access_log and log.isEnabledFor(logging.INFO) and route not in ("/live", "/metrics"):
            log.info("%s %s %d %.1fms", scope["method"], path, status, elapsed * 1000)

    def _limit_for(self, path: str) -> int | None:
        for prefix, limit in self.body_limits:
            if path.startswith(prefix):
                return limit
        return self.max_body


def strip_trailing_slash(scope: Scope) -> None:
    """``/a/b/`` is routed as ``/a/b`` (one slash only; ``/`` stays ``/``)."""
    path: str = scope["path"]
    if len(path) > 1 and path.endswith("/"):
        scope["path"] = path[:-1]
        raw: bytes | None = scope.get("raw_path")
        if raw and raw.endswith(b"/") and len(raw) > 1:
            scope["raw_path"] = raw[:-1]


def _request_id(scope: Scope) -> str:
    """The client's X-Request-ID when it is a sane one, else a new id."""
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            incoming = value.decode("latin-1")
            return incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
    return uuid.uuid4().hex


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return str(route.path)
    return "<unmatched>"


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than the limit of {limit} bytes.")


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _counted(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return counted
