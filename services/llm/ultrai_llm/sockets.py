"""Orchestration over a WebSocket (``/api/v1/llm/orchestrate/ws``): the events of the streamed
``POST /api/v1/llm/orchestrate`` as JSON messages, and a way for the client to cancel.

1. The client's first message (within FIRST_MESSAGE_SECONDS) is
   ``{"token": <access token or API key>, "request": <the body of POST /api/v1/llm/orchestrate>}``:
   the token never goes in the URL. The token is checked first, as an HTTP request's is
   (``TokenVerifier.authenticate``: an API key needs the ``llm`` scope, and its calls are recorded
   and limited as the key's: rpm, tpm and budget), then the request, as the HTTP route does
   (``stream`` is ignored: a socket always streams).
2. The service sends each event as ``{"event": <the SSE event name>, ...its data}``: ``stage``,
   ``delta`` and ``result`` while it runs (and ``ranking`` in the ranked pattern, ``comparison`` with
   ``compare``), then ``done`` (the answer, as the POST answers it).
3. ``{"type": "cancel"}`` from the client: no call starts after it, the calls under way finish (and
   are recorded in usage like any other), and the last event is ``cancelled`` (the answer so far,
   ``"status": "cancelled"``). Other messages from the client are ignored.
4. The service closes the socket: 1000 after ``done`` or ``cancelled``. A refusal or a failure is
   sent first as an ``error`` event (the problem+json body the HTTP route would answer), then the
   socket is closed with 4000 + that HTTP status: 4401 for a missing or invalid token, 4400 for a
   first message that is not a JSON object, 4422 for a request that does not fit the schema (its
   ``errors`` listed), 4403 for an API key without the ``llm`` scope, 4402/4413/4429/4503 as over
   HTTP (4402 too when the estimate's high end does not fit in what is left of the budget), 4502
   when every model failed, 4408 when the first message did not come in time.
5. Revocation: a revoked token or key is refused on a new socket (4401). On an open socket the
   credential is checked again before each stage after the first (review, synthesis): once the
   revocation has reached this service no further call starts; the calls under way finish (and are
   recorded), their results have been sent, and the run ends with an ``error`` event (401) and 4401.

A client that goes away stops the run, as an SSE client that goes away does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from shared.apikeys import current_key
from shared.context import request_id_var
from shared.errors import ProblemError
from shared.tokens import TokenVerifier, unauthorized
from ultrai_llm.conversation_runs import execute_turn, plan_turn
from ultrai_llm.estimate import check_affordable
from ultrai_llm.orchestrate import Plan
from ultrai_llm.schemas import OrchestrateRequest
from ultrai_llm.service import Llm
from ultrai_llm.streaming import Emit, EventRun, problem_body

log = logging.getLogger("ultrai_llm.sockets")

FIRST_MESSAGE_SECONDS = 30.0
NORMAL = 1000
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_GONE = (WebSocketDisconnect, RuntimeError, OSError)


class ClientGone(Exception):
    """The client closed the socket before the run began."""


def close_code(status: int) -> int:
    """The close code of a problem: 4000 + its HTTP status."""
    return 4000 + status if 400 <= status < 600 else 4500


def close_reason(problem: dict[str, Any]) -> str:
    """The problem's detail (or title), cut to the 123 bytes a close frame holds."""
    text = str(problem.get("detail") or problem.get("title") or "")
    data = text.encode()
    return text if len(data) <= 123 else data[:120].decode(errors="ignore") + "..."


def validation_problem(exc: ValidationError) -> ProblemError:
    """As the HTTP routes answer an invalid body: 422, which field and why, the input not echoed."""
    errors = [
        {"field": ".".join(["request", *(str(p) for p in e["loc"])]), "message": e["msg"], "type": e["type"]}
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"field": "request", "message": "invalid"}
    return ProblemError(
        422,
        f"Invalid request: {first['field']}: {first['message']}",
        title="Validation failed",
        extra={"errors": errors},
    )


async def serve_orchestration(websocket: WebSocket, llm: Llm, verifier: TokenVerifier) -> None:
    incoming = websocket.headers.get("x-request-id")
    request_id_var.set(incoming if incoming and _VALID_ID.match(incoming) else uuid.uuid4().hex)
    await websocket.accept()
    try:
        started = await start(websocket, llm, verifier)
    except ClientGone:
        return
    except ProblemError as exc:
        await finish(websocket, "error", problem_body(exc))
        return
    await run(websocket, llm, started)


@dataclass
class Started:
    """A checked request and its plan, ready to run."""

    plan: Plan
    body: OrchestrateRequest
    user_id: str


async def start(websocket: WebSocket, llm: Llm, verifier: TokenVerifier) -> Started:
    """The plan of the first message's request, once its token and the request are checked."""
    try:
        async with asyncio.timeout(FIRST_MESSAGE_SECONDS):
            message = await websocket.receive()
    except TimeoutError:
        raise ProblemError(408, f"The first message did not arrive within {FIRST_MESSAGE_SECONDS:g} s.") from None
    if message["type"] == "websocket.disconnect":
        raise ClientGone
    first: Any = None
    with contextlib.suppress(TypeError, ValueError):
        first = json.loads(message.get("text") or "")
    if not isinstance(first, dict):
        raise ProblemError(400, 'The first message must be a JSON object: {"token": ..., "request": {...}}.')
    token = first.get("token")
    if not isinstance(token, str) or not token:
        raise unauthorized("The first message needs the access token or API key in 'token'.")
    # The check an HTTP request's credential gets (an API key: resolved, not revoked, with "llm").
    principal = await verifier.authenticate(token, websocket)
    user_id = str(principal.user_id)
    # The run's calls are the key's (recorded and limited per key): the run's task inherits this.
    current_key.set(principal.key)
    try:
        body = OrchestrateRequest.model_validate(first.get("request"))
    except ValidationError as exc:
        raise validation_problem(exc) from None
    plan = await plan_turn(llm, body, user_id)
    await check_affordable(llm, plan, user_id)

    async def still_allowed() -> None:
        await verifier.still_valid(principal)

    plan.before_stage = still_allowed
    return Started(plan, body, user_id)


async def run(websocket: WebSocket, llm: Llm, started: Started) -> None:
    """Run the plan, each event a message, while the client's messages are read for a cancel."""
    plan = started.plan

    async def runner(emit: Emit) -> dict[str, Any]:
        return await execute_turn(llm, plan, started.body, started.user_id, emit)

    events = EventRun(runner)
    reader = asyncio.create_task(read_client(websocket, plan, events))
    last: tuple[str, dict[str, Any]] | None = None
    try:
        while (item := await events.next()) is not None:
            event, data = item
            if event == "done" and plan.cancelled:
                event = "cancelled"
            if event in ("done", "cancelled", "error"):
                last = (event, data)
                break
            await websocket.send_json({"event": event, **data})
    except _GONE:
        events.stop()
        return
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    if last is not None:
        await finish(websocket, *last)


async def read_client(websocket: WebSocket, plan: Plan, events: EventRun) -> None:
    """Until the client leaves (the run is then stopped): a ``{"type": "cancel"}`` cancels the plan."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            data: Any = None
            with contextlib.suppress(TypeError, ValueError):
                data = json.loads(message.get("text") or "")
            if isinstance(data, dict) and data.get("type") == "cancel" and not plan.cancelled:
                log.info("orchestration %s cancelled by the client", plan.id)
                plan.cancel()
    except _GONE:
        pass
    events.stop()


async def finish(websocket: WebSocket, event: str, data: dict[str, Any]) -> None:
    """The last event, then the close: 1000, or 4000 + the status of a problem."""
    code = close_code(int(data.get("status", 500))) if event == "error" else NORMAL
    with contextlib.suppress(*_GONE):
        await websocket.send_json({"event": event, **data})
        await websocket.close(code, close_reason(data) if event == "error" else "")
