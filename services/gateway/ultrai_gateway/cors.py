"""Starlette's CORS middleware, with refusals answered as problem+json like every other 4xx."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from shared.errors import problem_response
from ultrai_gateway.settings import GatewaySettings


class ProblemCORSMiddleware(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
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


def cors_middleware(settings: GatewaySettings, methods: list[str]) -> Middleware:
    """CORS for the origins the settings allow, with credentials, on ``methods``."""
    return Middleware(
        ProblemCORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_origin_regex=settings.cors_origin_regex,
        # Credentials are only ever answered for an origin that is listed or matches the regex:
        # Starlette echoes the origin only then, and never "*" with credentials.
        allow_credentials=True,
        allow_methods=methods,
        allow_headers=["Authorization", "Content-Type", "X-Request-ID", "Accept", "Last-Event-ID"],
        expose_headers=["X-Request-ID", "Retry-After", "Location", "Content-Disposition"],
        max_age=600,
    )
