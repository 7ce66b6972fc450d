"""A pooled httpx client per upstream service, created at start-up and closed at shutdown.

Every call carries the current ``X-Request-ID``; an optional ``token`` callable adds a bearer token
(service-to-service calls carry a short-lived service token).

httpx is imported when a process makes its first client, not with this module: auth calls no other
service and so never loads it (about 1.5 MB per worker).
"""

from __future__ import annotations

import functools
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from shared.context import current_request_id

if TYPE_CHECKING:
    import httpx

TokenSource = Callable[[], Awaitable[str]]


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS settings every httpx client of this process uses: httpx's own defaults (certifi's
    certificate authorities), made once. A client given none builds a context of its own and loads
    the whole CA bundle into it, about 0.8 MB each, and a service holds several clients."""
    import httpx

    return httpx.create_ssl_context(trust_env=False)


def http_errors(*others: type[Exception]) -> tuple[type[Exception], ...]:
    """``others`` and httpx's error class, for an ``except`` clause of code that runs with or without
    HTTP (a token verifier reads keys and revocations from auth over HTTP, or inside auth from auth
    itself): httpx's class only once httpx is loaded, as no client can have raised one before."""
    httpx = sys.modules.get("httpx")
    return (httpx.HTTPError, *others) if httpx is not None else others


def default_timeout(connect: float = 1.0, read: float = 30.0) -> httpx.Timeout:
    import httpx

    return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)


class ServiceClient:
    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        timeout: httpx.Timeout | None = None,
        token: TokenSource | None = None,
        max_connections: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        import httpx

        self.name = name
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout or default_timeout(),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            event_hooks={"request": [self._add_headers]},
            transport=transport,
            trust_env=False,
            verify=tls_context(),
        )

    async def _add_headers(self, request: httpx.Request) -> None:
        rid = current_request_id()
        if rid and "x-request-id" not in request.headers:
            request.headers["X-Request-ID"] = rid
        if self._token is not None and "authorization" not in request.headers:
            request.headers["Authorization"] = f"Bearer {await self._token()}"

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.http.request(method, path, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.http.get(path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.http.post(path, **kwargs)

    async def aclose(self) -> None:
        await self.http.aclose()
