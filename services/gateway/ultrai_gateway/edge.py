"""The edge token check: a protected route without a valid access token or API key is refused at the
gateway (an API key also needs the scope of the route: ``shared.apikeys.required_scope``).

The services check again themselves (each service's own URL is reachable too); this check spares
them the traffic and gives the frontend one consistent 401. Public: account creation, login,
refresh, logout, the public keys, and each service's directory (``GET <prefix>``); the gateway's own
health, docs and metrics routes are not proxied and never reach this check.

One request passes without a token because it carries another credential the gateway cannot check:
a browser's EventSource following an analysis' events with ``?ticket=`` (it cannot send an
Authorization header). The documents service checks and spends the ticket itself.
"""

from __future__ import annotations

import re

from fastapi import Request

from shared.tokens import TokenVerifier, bearer_token, unauthorized

PUBLIC_PATHS = frozenset(
    {
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
    }
)
PUBLIC_PREFIXES = ("/.well-known/",)
# The events of one analysis: ids are letters, digits, "_" and "-" only (no "..", no escapes).
TICKET_STREAM = re.compile(r"/api/v1/documents/[A-Za-z0-9_-]{1,64}/analyses/[A-Za-z0-9_-]{1,64}/events")


def is_public(method: str, path: str, prefixes: tuple[str, ...]) -> bool:
    # With or without one trailing slash, as every route (shared.middleware takes it off first).
    if len(path) > 1:
        path = path.removesuffix("/")
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return True
    # CORS preflights carry no credentials; the service answers them.
    if method == "OPTIONS":
        return True
    return method in ("GET", "HEAD") and path in prefixes


DOT_SEGMENT = "The path has a '.' or '..' segment: send it resolved (RFC 3986 section 5.2.4)."


def has_dot_segment(path: str) -> bool:
    """A "." or ".." segment in ``path`` (decoded): refused at the edge (400, ``DOT_SEGMENT``), HTTP
    and WebSocket. Clients resolve them before sending (RFC 3986 §5.2.4); a path that still has one
    means one thing to these checks and another to whatever resolves it further on (when the proxy
    rebuilt the service's URL, its client did: "/.well-known/../<route>", public here, reached
    ``<route>`` upstream past this check)."""
    return "/." in path and any(segment in (".", "..") for segment in path.split("/"))


def is_ticket_stream(request: Request) -> bool:
    """A GET of an analysis' events with a ``ticket`` query parameter and no Authorization header."""
    return (
        request.method == "GET"
        and "authorization" not in request.headers
        and bool(request.query_params.get("ticket"))
        and TICKET_STREAM.fullmatch(request.scope["path"]) is not None
    )


async def check_edge(request: Request, verifier: TokenVerifier, prefixes: tuple[str, ...]) -> str | None:
    """Raise a 401 problem unless the route is public or the request carries a valid access token;
    the token's user, when there is one."""
    if is_public(request.method, request.scope["path"], prefixes) or is_ticket_stream(request):
        return None
    token = bearer_token(request)
    if token is None:
        raise unauthorized()
    # An API key is resolved, revocation- and scope-checked as at a service.
    return (await verifier.authenticate(token, request)).user_id
