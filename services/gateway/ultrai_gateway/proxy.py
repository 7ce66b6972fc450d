"""Streaming reverse proxy: request and response bodies pass through chunk by chunk, never whole.

The proxy's client is aiohttp rather than httpx: on this hot path (every request through the
gateway) its C-accelerated HTTP parser roughly doubled the gateway's throughput in front of the
same service in an A/B run (see bench/bench_gateway.py). The gateway's other calls (health) use the
shared httpx ServiceClient.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
from fastapi import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Scope
from yarl import URL

from shared.context import current_request_id
from shared.errors import problem_response
from shared.metrics import UPSTREAM_ERRORS
from shared.middleware import BodyTooLarge
from shared.net import TrustedProxies, client_address

log = logging.getLogger("ultrai_gateway.proxy")
OnClose = Callable[[], Awaitable[None]]

# RFC 9110 §7.6.1 hop-by-hop fields: the gateway passes them on neither way.
_RFC9110_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Not passed on from a request: the hop-by-hop fields and the ones the gateway sets itself.
_HOP_BY_HOP = _RFC9110_HOP_BY_HOP | {
    b"host",
    b"x-request-id",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-real-ip",
    b"forwarded",
}
# Not passed on from an answer: the hop-by-hop fields and the ones the gateway sets itself.
_RESPONSE_DROP = _RFC9110_HOP_BY_HOP | {b"x-request-id", b"server", b"date"}
_IDEMPOTENT = {"GET", "HEAD", "OPTIONS", "DELETE", "PUT"}
SMALL_BODY_BYTES = 64 * 1024  # bodies up to this size go through in one piece, both ways


@dataclass
class Upstream:
    name: str
    prefixes: tuple[str, ...]
    base_url: str
    session: aiohttp.ClientSession
    critical: bool = True
    trusted: TrustedProxies = field(default_factory=TrustedProxies)
    # The base URLs of every service behind the gateway: a URL in a Location, Content-Location or
    # Link header of this service's answers that points at one of them is made relative.
    internal: tuple[str, ...] = ()
    authorities: frozenset[tuple[str, int]] = field(init=False)

    def __post_init__(self) -> None:
        self.authorities = frozenset(_authority(url) for url in (self.base_url, *self.internal))


def new_session(
    connect_timeout: float, read_timeout: float, max_connections: int, pool_timeout: float
) -> aiohttp.ClientSession:
    """One upstream's connection pool. A request waits at most ``pool_timeout`` for a free
    connection (aiohttp's ``connect`` covers the wait and the connect), then gets a quick 503."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections, ttl_dns_cache=60),
        timeout=aiohttp.ClientTimeout(
            total=None, connect=pool_timeout + connect_timeout, sock_connect=connect_timeout, sock_read=read_timeout
        ),
        auto_decompress=False,  # bytes pass through as the service encoded them
        # A Set-Cookie is one client's: passed on to it, never kept and sent with anyone else's
        # requests (and no cookie work on each request).
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        trust_env=False,
    )


def _unavailable(upstream: Upstream, exc: BaseException, retry_after: int = 5) -> Response:
    UPSTREAM_ERRORS.labels("gateway", upstream.name, type(exc).__name__).inc()
    log.warning("upstream %s unavailable: %s", upstream.name, type(exc).__name__)
    return problem_response(
        503,
        f"The {upstream.name} service is unavailable; try again shortly.",
        title="Service unavailable",
        headers={"Retry-After": str(retry_after)},
        extra={"service": upstream.name},
    )


async def forward(request: Request, upstream: Upstream, on_close: OnClose | None = None) -> Response:
    """The upstream's answer to the request, streamed back; a problem answer when it cannot be had.
    ``on_close`` runs once the answer is over (its last byte sent, or the client gone)."""
    headers = _upstream_headers(request, upstream)
    has_body = request.headers.get("content-length") not in (None, "0") or "transfer-encoding" in request.headers
    body = _RequestBody(request)
    # A request with no body is retried once on a pooled connection the service had closed (it
    # restarted, or timed out the keep-alive): that request never reached it.
    data = await body.data() if has_body else None
    attempts = 1 if has_body or request.method not in _IDEMPOTENT else 2
    sent = await _send(upstream, request.method, upstream_url(upstream, request.scope), headers, data, body, attempts)
    if isinstance(sent, aiohttp.ClientResponse):
        return await _relay(sent, upstream, on_close)
    if on_close is not None:
        await on_close()
    return sent


def _upstream_headers(request: Request, upstream: Upstream) -> list[tuple[str, str]]:
    scope = request.scope
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in _HOP_BY_HOP]
    # The gateway is the edge: it sets X-Forwarded-For itself, to the address its trusted proxies
    # saw, so no client can choose the address the services rate-limit on.
    headers.append(("X-Forwarded-For", client_address(scope, upstream.trusted)))
    headers.append(("X-Forwarded-Proto", scope.get("scheme", "http")))
    headers.append(("X-Request-ID", current_request_id() or ""))
    host = request.headers.get("host")
    if host:
        headers.append(("X-Forwarded-Host", host))
    return headers


def upstream_url(upstream: Upstream, scope: Scope) -> URL:
    """The service's URL for a request (HTTP or WebSocket): the path exactly as the client sent it
    (``raw_path``, still percent-encoded) and the query. Never rebuilt from the decoded path: a
    "%3F" or "%23" decoded would start a query or a fragment upstream, and "." or ".." would be
    resolved, so the service would route another path than the one the gateway's checks read
    ("/api/v1/documents%3F" is not an upload here; it was one upstream)."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    target = raw.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
    return URL(upstream.base_url + target, encoded=True)


class _RequestBody:
    """The request's body on its way upstream.

    The body cap is counted as the bytes stream through; aiohttp would report the cut as a broken
    connection, so the refusal is kept here (``refused``) and answered as the 413 it is.
    """

    __slots__ = ("refused", "request")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.refused: BodyTooLarge | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.request.stream():
                yield chunk
        except BodyTooLarge as exc:
            self.refused = exc
            raise

    async def data(self) -> bytes | AsyncIterator[bytes]:
        """A small body with a declared length (JSON calls) is read and sent in one piece: streamed,
        it goes out as separate writes after the headers and costs the hop milliseconds. Anything
        larger or of unknown length streams through chunk by chunk."""
        declared = self.request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) <= SMALL_BODY_BYTES:
            return b"".join([chunk async for chunk in self.chunks()])
        return self.chunks()


async def _send(
    upstream: Upstream,
    method: str,
    url: URL,
    headers: list[tuple[str, str]],
    data: bytes | AsyncIterator[bytes] | None,
    body: _RequestBody,
    attempts: int,
) -> aiohttp.ClientResponse | Response:
    """The upstream's response, or the problem answer that stands for it (503, 504, 502)."""
    attempt = 1
    while True:
        try:
            return await upstream.session.request(
                method, url, headers=headers, data=data, allow_redirects=False, compress=False
            )
        except aiohttp.ClientConnectorError as exc:  # nothing listens: the service is down
            return _unavailable(upstream, exc)
        except aiohttp.ConnectionTimeoutError as exc:  # no free pooled connection in time, or no connect
            return _unavailable(upstream, exc, retry_after=1)
        except aiohttp.ServerDisconnectedError as exc:
            if attempt < attempts:
                attempt += 1
                continue
            return _unavailable(upstream, exc)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            UPSTREAM_ERRORS.labels("gateway", upstream.name, type(exc).__name__).inc()
            return problem_response(
                504, f"The {upstream.name} service did not answer in time.", extra={"service": upstream.name}
            )
        except (aiohttp.ClientError, OSError) as exc:
            if body.refused is not None:
                raise body.refused from None
            # The service broke the connection mid-request (reset, closed while the body was sent).
            UPSTREAM_ERRORS.labels("gateway", upstream.name, type(exc).__name__).inc()
            log.warning("upstream %s broke the connection: %s", upstream.name, type(exc).__name__)
            return problem_response(
                502, f"The {upstream.name} service broke off the request; try again.", extra={"service": upstream.name}
            )


async def _relay(resp: aiohttp.ClientResponse, upstream: Upstream, on_close: OnClose | None) -> Response:
    """The upstream's response passed on, less the hop-by-hop headers. A small one of declared
    length (the JSON answers) is read whole and answered in one piece: a streamed answer costs the
    gateway a task group and a send per chunk. Anything else streams through as it arrives."""
    headers = _response_headers(resp, upstream)
    length = resp.content_length
    if on_close is None and length is not None and length <= SMALL_BODY_BYTES:
        try:
            data = await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # Nothing has been sent yet: the client gets the problem, not a cut body.
            UPSTREAM_ERRORS.labels("gateway", upstream.name, type(exc).__name__).inc()
            log.warning("upstream %s broke off a response: %s", upstream.name, type(exc).__name__)
            return problem_response(
                502, f"The {upstream.name} service broke off its answer; try again.", extra={"service": upstream.name}
            )
        finally:
            resp.release()
        whole = Response(data, status_code=resp.status)
        whole.raw_headers = headers
        return whole

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in resp.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # The response has started: all that can be done is to end it; the client sees a cut body.
            UPSTREAM_ERRORS.labels("gateway", upstream.name, type(exc).__name__).inc()
            log.warning("upstream %s broke off a response: %s", upstream.name, type(exc).__name__)
        finally:
            resp.release()
            if on_close is not None:
                await on_close()

    response = StreamingResponse(body(), status_code=resp.status)
    response.raw_headers = headers
    return response


def _response_headers(resp: aiohttp.ClientResponse, upstream: Upstream) -> list[tuple[bytes, bytes]]:
    headers = []
    for key, value in resp.raw_headers:
        name = key.lower()
        if name in _RESPONSE_DROP:
            continue
        if name in _URL_HEADERS:
            value = _public_urls(name, value, upstream.authorities)
        headers.append((key, value))
    return headers


# Headers whose values are URLs (Link: URLs in angle brackets) a service may make absolute with its
# own address, which the browser cannot reach and the gateway must not disclose.
_URL_HEADERS = {b"location", b"content-location", b"link"}
_LINK_TARGET = re.compile(rb"<([^>]*)>")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _authority(url: str) -> tuple[str, int]:
    """(host, port) of an absolute URL, the port filled in from the scheme when absent."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "", port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0))


def _relative(url: bytes, authorities: frozenset[tuple[str, int]]) -> bytes:
    """``url`` as a path on the gateway when it points at a service's address; unchanged otherwise."""
    text = url.decode("latin-1").strip()
    if "//" not in text:
        return url  # already relative (or not a URL at all)
    parts = urlsplit(text)
    if not parts.netloc or _authority(text) not in authorities:
        return url
    relative = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    relative += f"#{parts.fragment}" if parts.fragment else ""
    # A path starting with "//" would read as a host: keep one slash.
    return ("/" + relative.lstrip("/")).encode("latin-1")


def _public_urls(name: bytes, value: bytes, authorities: frozenset[tuple[str, int]]) -> bytes:
    if name == b"link":
        return _LINK_TARGET.sub(lambda m: b"<" + _relative(m.group(1), authorities) + b">", value)
    return _relative(value, authorities)
