"""CORS at the gateway, in two layers built from one configuration.

- The outer layer (outside ``shared.middleware.RequestContextMiddleware``, the outermost of the
  app) puts the CORS headers on every answer to an allowed origin, including the ones made before
  routing: 413 and 431 from the request-context layer, 429 from the rate limit, 500, and the
  502/503/504 that stand for a service. Without them a browser sees an opaque network error instead
  of the problem answer.
- The inner layer (inside the request-context layer) answers preflights, so that they carry a
  request id and a refusal is problem+json like every other 4xx. A preflight has no body and is
  answered before routing, so none of the answers above can stand in its place.

Only the gateway speaks CORS: access-control headers an upstream sent are replaced by its own. An
origin that is not allowed gets no CORS header at all (only ``Vary: Origin``).

Allowed request headers: the API's own, plus what the official OpenAI SDKs send from a browser
(``OpenAI-Organization``, ``OpenAI-Project`` and every ``X-Stainless-*`` header, whose set grows
with each SDK release, hence a prefix).
"""

from __future__ import annotations

from typing import NamedTuple

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import problem_response
from ultrai_gateway.settings import GatewaySettings

ALLOW_HEADERS = [
    "Authorization",
    "Content-Type",
    "Accept",
    "X-Request-ID",
    "Last-Event-ID",
    "OpenAI-Organization",
    "OpenAI-Project",
]
# Any request header with this prefix is allowed (the OpenAI SDKs' platform and retry headers).
ALLOW_HEADER_PREFIXES = ("x-stainless-",)
EXPOSE_HEADERS = [
    "X-Request-ID",
    "WWW-Authenticate",
    "Retry-After",
    "RateLimit",
    "RateLimit-Policy",
    "Location",
    "Content-Disposition",
]


class ProblemCORSMiddleware(CORSMiddleware):
    """Starlette's CORS decisions, in one of two roles: ``preflights`` (answers them, passes the
    rest on) or ``answers`` (adds the headers to every other answer, passes preflights on)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        role: str,
        allow_origins: list[str],
        allow_origin_regex: str | None,
        allow_methods: list[str],
        max_age: int = 600,
    ) -> None:
        if role not in ("preflights", "answers"):
            raise ValueError(f"unknown CORS role {role!r}")
        super().__init__(
            app,
            allow_origins=allow_origins,
            allow_origin_regex=allow_origin_regex,
            # Credentials are answered only to an origin that is listed or matches the regex,
            # echoed back (never "*": the settings refuse it).
            allow_credentials=True,
            allow_methods=allow_methods,
            allow_headers=ALLOW_HEADERS,
            expose_headers=EXPOSE_HEADERS,
            max_age=max_age,
        )
        self.role = role

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A request without an Origin header (same-origin, or not from a browser) gets no CORS
        # header and is no preflight: it passes through both layers untouched.
        if scope["type"] != "http" or not any(key == b"origin" for key, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        if preflight and self.role == "preflights":
            await self.preflight_response(request_headers=headers)(scope, receive, send)
        elif not preflight and self.role == "answers":
            await self.simple_response(scope, receive, send, request_headers=headers)
        else:
            await self.app(scope, receive, send)

    def preflight_response(self, request_headers: Headers) -> Response:
        requested = request_headers.get("access-control-request-headers")
        prefixed: list[str] = []
        if requested is not None:
            # Headers allowed by prefix are taken out of the request Starlette checks, and named in
            # the answer (with credentials, "*" would be taken literally, not as a wildcard).
            names = [name.strip() for name in requested.split(",") if name.strip()]
            prefixed = [name for name in names if name.lower().startswith(ALLOW_HEADER_PREFIXES)]
            rest = [name for name in names if name not in prefixed]
            raw = [(k, v) for k, v in request_headers.raw if k != b"access-control-request-headers"]
            if rest:
                raw.append((b"access-control-request-headers", ", ".join(rest).encode("latin-1")))
            request_headers = Headers(raw=raw)
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            if prefixed:
                allowed = response.headers.get("access-control-allow-headers", "")
                response.headers["access-control-allow-headers"] = ", ".join(
                    [part for part in (allowed, *(name.lower() for name in prefixed)) if part]
                )
            return response
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        # Only the CORS headers of a refusal are kept; Access-Control-Allow-Origin is never among
        # them for an origin that is not allowed.
        headers = {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-") or k == "vary"}
        headers.pop("access-control-allow-origin", None)
        headers.pop("access-control-allow-credentials", None)
        return problem_response(
            400,
            f"Cross-origin request refused: {refused} not allowed.",
            title="CORS preflight refused",
            headers=headers,
        )

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        if message["type"] != "http.response.start":
            await send(message)
            return
        origin = request_headers.get("origin")
        if origin is None:
            await send(message)
            return
        message["headers"] = [
            (k, v) for k, v in message.get("headers", []) if not k.lower().startswith(b"access-control-")
        ]
        headers = MutableHeaders(scope=message)
        headers.update(self.answer_headers(origin))
        headers["Vary"] = ", ".join([*headers.getlist("Vary"), "Origin"])
        await send(message)

    def answer_headers(self, origin: str) -> dict[str, str]:
        """The CORS headers of an answer to a request from ``origin`` (none for an origin that is
        not allowed; ``Vary: Origin`` is the caller's to add)."""
        if not self.is_allowed_origin(origin):
            return {}
        return {**self.simple_headers, "Access-Control-Allow-Origin": origin}


class CORSLayers(NamedTuple):
    outer: Middleware  # outside the request-context layer: headers on every answer
    inner: Middleware  # inside it: preflights


def cors_middleware(settings: GatewaySettings, methods: list[str]) -> CORSLayers:
    """CORS for the origins the settings allow, with credentials, on ``methods``."""
    origins, regex = settings.cors_origins, settings.cors_origin_regex
    return CORSLayers(
        *(
            Middleware(
                ProblemCORSMiddleware, role=role, allow_origins=origins, allow_origin_regex=regex, allow_methods=methods
            )
            for role in ("answers", "preflights")
        )
    )


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("the edge's CORS decisions answer nothing themselves")


def edge_cors(settings: GatewaySettings, methods: list[str]) -> ProblemCORSMiddleware:
    """The outer layer's decisions, for answers made before the application sees the request
    (the edge protocol's own 408 for a body that trickles in)."""
    return ProblemCORSMiddleware(
        _no_app,
        role="answers",
        allow_origins=settings.cors_origins,
        allow_origin_regex=settings.cors_origin_regex,
        allow_methods=methods,
    )
