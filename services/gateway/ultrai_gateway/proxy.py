"""Streaming reverse proxy: request and response bodies pass through chunk by chunk, never whole."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from fastapi import Request
from starlette.responses import Response, StreamingResponse

from shared.client import ServiceClient
from shared.errors import problem_response
from shared.metrics import UPSTREAM_ERRORS
from shared.net import client_address

log = logging.getLogger("ultrai_gateway.proxy")

# RFC 9110 §7.6.1 hop-by-hop fields, plus the ones the gateway sets itself.
_HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"host",
    b"x-request-id",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-real-ip",
    b"forwarded",
}
_RESPONSE_DROP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-request-id",
    "server",
    "date",
}


@dataclass
class Upstream:
    name: str
    prefixes: tuple[str, ...]
    client: ServiceClient
    critical: bool = True
    trusted_hops: int = 0


async def forward(request: Request, upstream: Upstream) -> Response:
    scope = request.scope
    headers = [(k, v) for k, v in scope["headers"] if k not in _HOP_BY_HOP]
    # The gateway is the edge: it sets X-Forwarded-For itself, to the address its trusted proxies
    # saw, so no client can choose the address the services rate-limit on.
    headers.append((b"x-forwarded-for", client_address(scope, upstream.trusted_hops).encode("latin-1")))
    headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
    host = request.headers.get("host")
    if host:
        headers.append((b"x-forwarded-host", host.encode("latin-1")))

    has_body = request.headers.get("content-length") not in (None, "0") or "transfer-encoding" in request.headers
    content: AsyncIterator[bytes] | None = request.stream() if has_body else None
    url = httpx.URL(path=scope["path"], query=scope.get("query_string", b""))
    http = upstream.client.http
    outgoing = http.build_request(request.method, url, headers=headers, content=content)
    try:
        resp = await http.send(outgoing, stream=True)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.RemoteProtocolError) as exc:
        UPSTREAM_ERRORS.labels("gateway", upstream.name, type(exc).__name__).inc()
        log.warning("upstream %s unavailable: %s", upstream.name, type(exc).__name__)
        return problem_response(
            503,
            f"The {upstream.name} service is unavailable; try again shortly.",
            title="Service unavailable",
            headers={"Retry-After": "5"},
            extra={"service": upstream.name},
        )
    except httpx.TimeoutException as exc:
        UPSTREAM_ERRORS.labels("gateway", upstream.name, type(exc).__name__).inc()
        return problem_response(
            504, f"The {upstream.name} service did not answer in time.", extra={"service": upstream.name}
        )
    except httpx.TransportError as exc:
        # The upstream broke the connection mid-request (reset, closed while the body was sent).
        UPSTREAM_ERRORS.labels("gateway", upstream.name, type(exc).__name__).inc()
        log.warning("upstream %s broke the connection: %s", upstream.name, type(exc).__name__)
        return problem_response(
            502, f"The {upstream.name} service broke off the request; try again.", extra={"service": upstream.name}
        )

    response_headers = [(k, v) for k, v in resp.headers.multi_items() if k.lower() not in _RESPONSE_DROP]

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in resp.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            # The response has started: all that can be done is to end it; the client sees a cut body.
            UPSTREAM_ERRORS.labels("gateway", upstream.name, type(exc).__name__).inc()
            log.warning("upstream %s broke off a response: %s", upstream.name, type(exc).__name__)
        finally:
            await resp.aclose()

    response = StreamingResponse(body(), status_code=resp.status_code)
    response.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response_headers]
    return response
