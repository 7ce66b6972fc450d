"""Events from a running task: the task reports events through ``emit`` (``EventRun``). Over HTTP a
renderer turns each into server-sent-event bytes (or nothing); the task starts before the response
does, so a failure that comes before the first event is still answered with a proper status and
problem+json body. Over a WebSocket (``ultrai_llm.sockets``) each event is a JSON message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.responses import Response, StreamingResponse

from shared.context import current_request_id
from shared.errors import ProblemError, problem_response

log = logging.getLogger("ultrai_llm.streaming")

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]
Runner = Callable[[Emit], Awaitable[dict[str, Any]]]
Renderer = Callable[[str, dict[str, Any]], bytes | None]
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def problem_body(exc: ProblemError) -> dict[str, Any]:
    body: dict[str, Any] = {"type": exc.type, "title": exc.title, "status": exc.status, "detail": exc.detail}
    body["request_id"] = current_request_id()
    body.update(exc.extra)
    return body


class EventRun:
    """``runner`` started in a task of its own; what it emits is read in order with ``next``, then
    ``done`` (its result) or ``error`` (a problem body), then None. Both the server-sent events of
    an HTTP answer (``event_stream``) and the messages of a WebSocket read it."""

    def __init__(self, runner: Runner) -> None:
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self.failure: ProblemError | None = None  # the problem it ended with (its headers)
        self.task = asyncio.create_task(self._main(runner))

    async def _emit(self, event: str, data: dict[str, Any]) -> None:
        await self._queue.put((event, data))

    async def _main(self, runner: Runner) -> None:
        try:
            await self._queue.put(("done", await runner(self._emit)))
        except ProblemError as exc:
            self.failure = exc
            await self._queue.put(("error", problem_body(exc)))
        except Exception as exc:
            log.exception("streamed request failed: %s", type(exc).__name__)
            await self._queue.put(("error", problem_body(ProblemError(500, "An internal error occurred."))))
        finally:
            await self._queue.put(None)

    async def next(self) -> tuple[str, dict[str, Any]] | None:
        return await self._queue.get()

    def stop(self) -> None:
        """Stop the runner (the client went away): the calls it is making are cancelled."""
        if not self.task.done():
            self.task.cancel()


async def event_stream(runner: Runner, render: Renderer) -> Response:
    """Run ``runner`` and stream what it emits, then ``done`` (its result) or ``error`` (a problem)."""
    run = EventRun(runner)
    first = await run.next()
    if first is not None and first[0] == "error":
        # Nothing has been sent yet: answer with the status itself.
        run.stop()
        problem = first[1]
        return problem_response(
            problem["status"],
            problem.get("detail"),
            title=problem.get("title"),
            type=problem.get("type", "about:blank"),
            extra={k: v for k, v in problem.items() if k not in ("type", "title", "status", "detail", "request_id")},
            headers=run.failure.headers if run.failure is not None else None,
        )

    async def body() -> AsyncIterator[bytes]:
        item = first
        try:
            while item is not None:
                chunk = render(*item)
                if chunk:
                    yield chunk
                item = await run.next()
        finally:
            run.stop()  # the client went away: stop the calls

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)
