"""RFC 9457 problem details for every error, with the request id; never a trace or a secret."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, TypedDict, Unpack

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.context import current_request_id

PROBLEM_JSON = "application/problem+json"


class Problem(BaseModel):
    """The error body every route answers with (declared in OpenAPI for each 4xx/5xx)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = None


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries declaring problem+json bodies for the given status codes
    (the Problem schema is registered by shared.app.create_app)."""
    return {
        code: {
            "description": HTTPStatus(code).phrase,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for code in codes
    }


class ProblemFields(TypedDict, total=False):
    """What a problem answer may carry besides its status and detail."""

    title: str | None
    type: str
    headers: dict[str, str] | None
    extra: dict[str, Any] | None


class ProblemError(Exception):
    """Raise anywhere in a service to answer with a problem+json body."""

    def __init__(self, status: int, detail: str | None = None, **fields: Unpack[ProblemFields]) -> None:
        title = fields.get("title")
        super().__init__(detail or title or str(status))
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.type = fields.get("type", "about:blank")
        self.headers = fields.get("headers") or {}
        self.extra = fields.get("extra") or {}


def problem_response(status: int, detail: str | None = None, **fields: Unpack[ProblemFields]) -> JSONResponse:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body: dict[str, Any] = {"type": fields.get("type", "about:blank"), "title": fields.get("title") or phrase}
    body["status"] = status
    if detail is not None:
        body["detail"] = detail
    body["request_id"] = current_request_id()
    body.update(fields.get("extra") or {})
    return JSONResponse(body, status_code=status, headers=fields.get("headers"), media_type=PROBLEM_JSON)


def problem_for(exc: ProblemError) -> JSONResponse:
    """The answer to a raised ``ProblemError``."""
    return problem_response(
        exc.status, exc.detail, title=exc.title, type=exc.type, headers=exc.headers, extra=exc.extra
    )


def _clean_validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Which field and why; the rejected input is not echoed back (it may be a password)."""
    cleaned = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        cleaned.append({"field": ".".join(loc), "message": err.get("msg", "invalid"), "type": err.get("type")})
    return cleaned


def install_error_handlers(app: FastAPI) -> None:
    """Problem bodies for raised problems, HTTP errors and validation errors. Unhandled exceptions
    are answered by shared.middleware (500, no detail), where the request id is still known."""

    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> JSONResponse:
        return problem_for(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else None
        if exc.status_code == 404 and detail == "Not Found":
            detail = "No such resource."
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Starlette names only the methods of the first route that matched the path; a path
            # served by several routes (GET and DELETE on one document) allows all of theirs.
            headers["Allow"] = _allowed_methods(request)
            detail = f"Allowed methods: {headers['Allow']}."
        return problem_response(exc.status_code, detail, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _clean_validation_errors(list(exc.errors()))
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        return problem_response(
            422,
            f"Invalid request: {first['field']}: {first['message']}",
            title="Validation failed",
            extra={"errors": errors},
        )


def _allowed_methods(request: Request) -> str:
    methods: set[str] = set()
    for route in request.app.routes:
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(request.url.path):
            methods |= set(route_methods)
    return ", ".join(sorted(methods))
