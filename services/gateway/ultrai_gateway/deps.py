"""What the proxy routes depend on: the settings, the upstreams, the rate limiter and the token
verifier, with the two checks every proxied request passes (rate, then the edge token check).

The routes are closures over one ``Gateway`` (``routes.add_proxy_routes``) rather than handlers with
FastAPI dependencies: resolving a dependency is work on every request through the gateway, and
the proxy's hot path takes none it does not need. The lifespan opens what ``Gateway`` holds.
"""

from __future__ import annotations

from fastapi import Request
from starlette.requests import HTTPConnection

from shared.errors import ProblemError
from shared.net import client_address
from shared.ratelimit import RateLimiter
from shared.tokens import TokenVerifier
from ultrai_gateway.edge import check_edge
from ultrai_gateway.proxy import Upstream
from ultrai_gateway.settings import GatewaySettings
from ultrai_gateway.slots import Slot, StreamSlots

_WINDOW = {"minute": 60, "hour": 3600}


class Gateway:
    """What every proxied request uses; built with the app, its connections opened by the lifespan."""

    # Set by the lifespan, before the first request.
    limiter: RateLimiter
    verifier: TokenVerifier
    slots: StreamSlots

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.upstreams: dict[str, Upstream] = {}  # service name -> upstream, filled by the lifespan
        windows = ((settings.rate_limit_per_minute, "minute"), (settings.rate_limit_per_hour, "hour"))
        self._limits = [(limit, per) for limit, per in windows if limit]  # 0 turns one off
        self._limit_names = [f"{limit}/{per}" for limit, per in self._limits]

    async def check_rate(self, request: HTTPConnection) -> None:
        """Per client address, before anything costs work (token checks included): 429 + Retry-After.
        A WebSocket handshake counts as a request."""
        if not self._limits:
            return
        address = client_address(request.scope, self.settings.proxies)
        # Both windows in one check (one Redis round trip), the minute's first.
        refused, decision = await self.limiter.hit_each(self._limit_names, "gateway", address)
        if not decision.allowed:
            limit, per = self._limits[refused]
            raise ProblemError(
                429,
                f"Too many requests: the limit is {limit} per {per}; retry in {decision.retry_after} s.",
                headers={
                    "Retry-After": str(decision.retry_after),
                    "RateLimit-Policy": f"{limit};w={_WINDOW[per]}",
                },
            )

    async def check_edge(self, request: Request, prefixes: tuple[str, ...]) -> str | None:
        """The edge token check (``edge.py``) for a route of the service serving ``prefixes``; the
        caller's user id when the token names one."""
        if self.settings.edge_auth:
            return await check_edge(request, self.verifier, prefixes)
        return None

    async def take_slot(self, request: Request, user: str | None) -> Slot | None:
        """A slot of ``user``'s long-lived requests (uploads, event streams) when this is one of
        them: 429 beyond MAX_STREAMS_PER_USER. None for every other request."""
        if user is None or not is_long_lived(request.method, request.scope["path"]):
            return None
        return await self.slots.take(user)


def is_long_lived(method: str, path: str) -> bool:
    """Requests that hold an upstream connection for long: uploads and event streams."""
    if method == "POST":
        return path.rstrip("/") == "/api/v1/documents"
    return method == "GET" and path.rstrip("/").endswith("/events")
