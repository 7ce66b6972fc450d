"""Server-sent events from a running task: the task reports events through ``emit``; a renderer turns
each into bytes (or nothing). The task starts before the response does, so a failure that comes
before the first event is still answered with a proper status and problem+json body.
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


async def event_stream(runner: Runner, render: Renderer) -> Response:
    """Run ``runner`` and stream what it emits, then ``done`` (its result) or ``error`` (a problem)."""
    queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()

    async def emit(event: str, data: dict[str, Any]) -> None:
        await queue.put((event, data))

    async def main() -> None:
        try:
            await queue.put(("done", await runner(emit)))
        except ProblemError as exc:
            await queue.put(("error", problem_body(exc)))
        except Exception as exc:
            log.exception("streamed request failed: %s", type(exc).__name__)
            await queue.put(("error", problem_body(ProblemError(500, "An internal error occurred."))))
        finally:
            await queue.put(None)

    task = asyncio.create_task(main())
    first = await queue.get()
    if first is not None and first[0] == "error":
        # Nothing has been sent yet: answer with the status itself.
        task.cancel()
        problem = first[1]
        return problem_response(
            problem["status"],
            problem.get("detail"),
            title=problem.get("title"),
            type=problem.get("type", "about:blank"),
            extra={k: v for k, v in problem.items() if k not in ("type", "title", "status", "detail", "request_id")},
        )

    async def body() -> AsyncIterator[bytes]:
        item = first
        try:
            while item is not None:
                chunk = render(*item)
                if chunk:
                    yield chunk
                item = await queue.get()
        finally:
            if not task.done():
                task.cancel()  # the client went away: stop the calls

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)
