"""The proxied routes: for each service, its prefixes and everything under them, in every method,
forwarded unchanged (``proxy.forward``) after the rate and edge checks (``deps.Gateway``).

A proxied request is answered by ``ProxyDispatch``, a pure ASGI layer inside the app's own
middleware (request context, CORS), before FastAPI's exception layer, router and per-route
request/response wrappers: matching a path against a handful of prefixes and calling the handler
costs a fraction of what those layers cost every request through the gateway. The routes are still
on the app's router (``ProxyTable.install``), where they name the route in metrics and answer the
methods the proxy does not take (405).

Not in the OpenAPI document: each service documents its own routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import ProblemError, problem_for, problem_response
from ultrai_gateway.deps import Gateway
from ultrai_gateway.edge import DOT_SEGMENT, has_dot_segment
from ultrai_gateway.proxy import forward

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_METHODS = frozenset(METHODS)
Endpoint = Callable[[Request], Awaitable[Response]]


class ProxyTable:
    """The route table (service name -> the path prefixes it serves) as handlers and routes."""

    def __init__(self, routes: dict[str, tuple[str, ...]], gateway: Gateway) -> None:
        self.routes: list[Route] = []
        # (prefix, prefix + "/", handler, the route of the prefix itself, the route of what is under it)
        self.prefixes: list[tuple[str, str, Endpoint, Route, Route]] = []
        for name, prefixes in routes.items():
            endpoint = proxy_endpoint(gateway, name, prefixes)
            for prefix in prefixes:
                exact, under = (
                    Route(path, endpoint, methods=METHODS, include_in_schema=False, name=f"proxy_{name}_{path}")
                    for path in (prefix, prefix + "/{path:path}")
                )
                self.routes += [exact, under]
                self.prefixes.append((prefix, prefix + "/", endpoint, exact, under))

    def install(self, router: APIRouter) -> None:
        """Add the routes to ``router`` (the app's own: FastAPI matches an included router's routes
        through per-request route contexts). Starlette routes, not FastAPI's API routes: a handler
        that takes the request and returns a response needs no dependency solving or validation."""
        router.routes.extend(self.routes)

    def match(self, path: str) -> tuple[Endpoint, Route] | None:
        for prefix, under, endpoint, exact, sub in self.prefixes:
            if path == prefix:
                return endpoint, exact
            if path.startswith(under):
                return endpoint, sub
        return None


class ProxyDispatch:
    """Answers the proxied requests (every method the proxy takes, on a path under a prefix of the
    table) and passes everything else on to the app: its own routes, WebSockets, other methods.

    A problem raised by the checks (429, 401, 403, 503) or a body over the cap (413) is answered
    as FastAPI's exception handlers answer it; any other error goes up to the request-context
    layer (500)."""

    def __init__(self, app: ASGIApp, table: ProxyTable) -> None:
        self.app = app
        self.table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.table.match(scope["path"]) if scope["type"] == "http" and scope["method"] in _METHODS else None
        if found is None:
            await self.app(scope, receive, send)
            return
        endpoint, route = found
        scope["route"] = route  # the route template metrics are labelled with
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except ProblemError as exc:
            response = problem_for(exc)
        except HTTPException as exc:
            detail = exc.detail if isinstance(exc.detail, str) else None
            response = problem_response(exc.status_code, detail, headers=dict(exc.headers or {}) or None)
        await response(scope, receive, send)


def proxy_endpoint(gateway: Gateway, name: str, prefixes: tuple[str, ...]) -> Endpoint:
    """The handler of service ``name``'s routes."""

    async def proxy(request: Request) -> Response:
        if has_dot_segment(request.scope["path"]):
            raise ProblemError(400, DOT_SEGMENT)
        await gateway.check_rate(request)
        user = await gateway.check_edge(request, prefixes)
        slot = await gateway.take_slot(request, user)
        if slot is None:
            return await forward(request, gateway.upstreams[name])

        async def release() -> None:
            await gateway.slots.release(slot)

        try:
            return await forward(request, gateway.upstreams[name], on_close=release)
        except BaseException:
            await release()
            raise

    return proxy
