"""The proxied routes: for each service, its prefixes and everything under them, in every method,
forwarded unchanged (``proxy.forward``) after the rate and edge checks (``deps.Gateway``), on
the app's own ``APIRouter``.

Not in the OpenAPI document: each service documents its own routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.routing import Route

from ultrai_gateway.deps import Gateway
from ultrai_gateway.proxy import forward

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
Endpoint = Callable[[Request], Awaitable[Response]]


def add_proxy_routes(router: APIRouter, routes: dict[str, tuple[str, ...]], gateway: Gateway) -> None:
    """Add to ``router`` the routes of the route table (service name -> the path prefixes it serves).

    The app passes its own router (``app.router``) rather than including a router of these routes:
    FastAPI matches an included router's routes through per-request route contexts, which costs
    every proxied request tens of microseconds. They are Starlette routes, not FastAPI's API
    routes: a handler that takes the request and returns a response needs none of FastAPI's
    dependency solving and response validation, which cost every proxied request tens more.
    """
    for name, prefixes in routes.items():
        endpoint = proxy_endpoint(gateway, name, prefixes)
        for prefix in prefixes:
            for path in (prefix, prefix + "/{path:path}"):
                router.routes.append(
                    Route(path, endpoint, methods=METHODS, include_in_schema=False, name=f"proxy_{name}_{path}")
                )


def proxy_endpoint(gateway: Gateway, name: str, prefixes: tuple[str, ...]) -> Endpoint:
    """The handler of service ``name``'s routes."""

    async def proxy(request: Request) -> Response:
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
