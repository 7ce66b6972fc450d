"""A fake OpenAI-compatible provider that speaks real HTTP on a loopback port.

It stands in for every external LLM provider in tests and benchmarks, so the real client path
(litellm, the ``openai`` SDK, httpx) runs end to end. It serves ``POST /v1/chat/completions``
(streamed as server-sent events or not) and ``GET /v1/models``; how it answers is set per model name:

    with FakeOpenAI() as fake:                 # a thread with its own event loop; any test can use it
        fake.behave("model-a", text="Paris.", delay=0.2)
        fake.behave("model-b", status=429)     # or 500, 503, ...: an OpenAI-style error body
        fake.behave("model-c", hang=True)      # accepts the request and never answers (a timeout)
        fake.behave("model-d", break_after=3)  # a stream cut off after 3 chunks (and a non-stream
                                               # answer cut off mid-body)
        fake.base_url                          # "http://127.0.0.1:PORT/v1", the api_base to configure
        fake.models_file(path, ["model-a", "model-b"])  # a litellm Router model_list for LLM_MODELS_FILE
        fake.requests                          # every chat request received (model, body, headers)
        gate = fake.hold("model-e")            # answers only once gate.set() is called (any thread)

``reply=callable`` answers with ``callable(messages)`` (a test reads what the model was sent and
answers accordingly). ``count_tokens=True`` reports usage counted the way litellm's token counter
counts (``litellm.token_counter`` over the messages, and over the reply's text) instead of words:
what the llm service's estimate counts.

``fails=N`` makes only the next N requests for that model fail (with ``status``), then it answers
normally: what a retry should overcome. Models with no behaviour set answer at once with a text
derived from the prompt and the seed, as a sampling model's would be (the same prompt and seed give
the same text; a different prompt or seed a different text).

Run it standalone (for example for ``make dev`` or a benchmark in another process) with
``python -m tests.fakes.openai_server --port 9100``; behaviour is then set over HTTP with
``POST /_fake/behave`` (JSON: ``{"model": ..., <the keyword arguments of behave()>}``),
``POST /_fake/reset``, and the requests read with ``GET /_fake/requests``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Behaviour:
    text: str | None = None  # the reply; None: derived from the prompt
    delay: float = 0.0  # seconds before the answer (or before the first chunk)
    chunk_delay: float = 0.0  # seconds between stream chunks
    status: int | None = None  # answer with this HTTP error status instead
    fails: int | None = None  # only the next N requests fail with ``status`` (None: all of them)
    hang: bool = False  # never answer
    break_after: int | None = None  # cut the stream (or the body) off after this many chunks
    prompt_tokens: int | None = None  # usage to report (None: counted from the words)
    completion_tokens: int | None = None
    retry_after: float | None = None  # Retry-After header on errors
    reply: Callable[[list[dict[str, Any]]], str] | None = None  # the reply from the messages received
    count_tokens: bool = False  # usage as litellm's token counter counts it (None: words)


@dataclass
class Received:
    model: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float = field(default_factory=time.time)


def _words(text: str) -> int:
    return max(1, len(text.split()))


def default_reply(model: str, messages: list[dict[str, Any]], seed: int | None = None) -> str:
    last = ""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            last = content if isinstance(content, str) else json.dumps(content)
            break
    seeded = "" if seed is None else f"\n{seed}"
    digest = hashlib.sha256(f"{model}\n{last}{seeded}".encode()).hexdigest()[:8]
    return f"{model} answers {digest}: the question has been considered with care."


def _litellm() -> Any:
    """litellm, imported on first use only (it takes seconds), with its bundled cost map (offline)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm


def litellm_usage(model: str, messages: list[dict[str, Any]], text: str) -> dict[str, int]:
    """Usage as litellm's token counter counts it: the messages, and the reply as a completion."""
    counter = _litellm().token_counter
    return {
        "prompt_tokens": int(counter(model=model, messages=messages)),
        "completion_tokens": int(counter(model=model, text=text, count_response_tokens=True)),
    }


def _chunks(text: str) -> list[str]:
    """The reply split into stream pieces of a word each (keeping the spaces)."""
    parts = text.split(" ")
    return [p + (" " if i < len(parts) - 1 else "") for i, p in enumerate(parts)]


class FakeOpenAI:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None) -> None:
        self.host = host
        self.port = port or _free_port()
        self.api_key = api_key  # when set, requests must carry it as the bearer token
        self.behaviours: dict[str, Behaviour] = {}
        self.requests: list[Received] = []
        self.gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/_fake/behave", self._control_behave, methods=["POST"]),
                Route("/_fake/reset", self._control_reset, methods=["POST"]),
                Route("/_fake/requests", self._control_requests, methods=["GET"]),
            ]
        )

    # -- configuration ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def behave(self, model: str, **kwargs: Any) -> Behaviour:
        behaviour = Behaviour(**kwargs)
        if behaviour.count_tokens:
            _litellm()  # imported here, not in the middle of a request
        with self._lock:
            self.behaviours[model] = behaviour
        return behaviour

    def hold(self, model: str) -> threading.Event:
        """From now on, requests for ``model`` are received and then held until the returned event
        is set (after its behaviour's delay, before its answer)."""
        gate = threading.Event()
        with self._lock:
            self.gates[model] = gate
        return gate

    def reset(self) -> None:
        with self._lock:
            self.behaviours.clear()
            self.requests.clear()
            for gate in self.gates.values():
                gate.set()
            self.gates.clear()

    def calls(self, model: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if model is None or r.model == model]

    def model_entry(self, model: str, name: str | None = None, **params: Any) -> dict[str, Any]:
        """One litellm Router ``model_list`` entry pointing at this fake."""
        return {
            "model_name": name or model,
            "litellm_params": {
                "model": f"openai/{model}",
                "api_base": self.base_url,
                "api_key": self.api_key or "fake-key",
                **params,
            },
        }

    def models_file(self, path: Path | str, models: list[str], **params: Any) -> Path:
        """Write a models file (litellm Router ``model_list`` format, JSON, which is also YAML)."""
        path = Path(path)
        path.write_text(json.dumps({"model_list": [self.model_entry(m, **params) for m in models]}, indent=2))
        return path

    # -- running ---------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> FakeOpenAI:
        config = uvicorn.Config(
            self.app, host=self.host, port=self.port, log_config=None, access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"fake-openai-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the fake provider did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            # Hanging requests would hold a graceful shutdown; force it.
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP ------------------------------------------------------------------------------------

    def _authorised(self, request: Request) -> bool:
        if self.api_key is None:
            return True
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    async def _models(self, request: Request) -> Response:
        with self._lock:
            names = sorted(self.behaviours)
        return JSONResponse(
            {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "fake"} for n in names]}
        )

    async def _chat(self, request: Request) -> Response:
        if not self._authorised(request):
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "The body is not valid JSON.", "invalid_request_error")
        model = str(body.get("model", ""))
        messages = body.get("messages") or []
        with self._lock:
            self.requests.append(Received(model, body, dict(request.headers)))
            behaviour = self.behaviours.get(model, Behaviour())
            gate = self.gates.get(model)
            failing = behaviour.status is not None and (behaviour.fails is None or behaviour.fails > 0)
            if failing and behaviour.fails is not None:
                behaviour.fails -= 1
        if behaviour.hang:
            await asyncio.sleep(3600)
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        while gate is not None and not gate.is_set():
            await asyncio.sleep(0.01)
        if failing:
            headers = {"Retry-After": str(behaviour.retry_after)} if behaviour.retry_after is not None else None
            kind = "rate_limit_error" if behaviour.status == 429 else "server_error"
            return _error(behaviour.status, f"The fake provider answers {behaviour.status}.", kind, headers=headers)

        if behaviour.reply is not None:
            text = behaviour.reply(messages)
        else:
            text = behaviour.text if behaviour.text is not None else default_reply(model, messages, body.get("seed"))
        if behaviour.count_tokens:
            usage = litellm_usage(model, messages, text)
        else:
            prompt_text = " ".join(str(m.get("content", "")) for m in messages)
            usage = {
                "prompt_tokens": behaviour.prompt_tokens or _words(prompt_text),
                "completion_tokens": behaviour.completion_tokens or _words(text),
            }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        cid = f"chatcmpl-{uuid.uuid4().hex[:20]}"
        created = int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                self._stream(cid, created, model, text, usage, include_usage, behaviour),
                media_type="text/event-stream",
            )
        answer = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
        if behaviour.break_after is not None:
            payload = json.dumps(answer).encode()
            return StreamingResponse(_cut_body(payload), media_type="application/json")
        return JSONResponse(answer)

    async def _stream(
        self,
        cid: str,
        created: int,
        model: str,
        text: str,
        usage: dict[str, int],
        include_usage: bool,
        behaviour: Behaviour,
    ) -> AsyncIterator[bytes]:
        def event(delta: dict[str, Any], finish: str | None = None, usage_part: dict | None = None) -> bytes:
            chunk: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [] if usage_part else [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if usage_part:
                chunk["usage"] = usage_part
            return f"data: {json.dumps(chunk)}\n\n".encode()

        yield event({"role": "assistant", "content": ""})
        for i, piece in enumerate(_chunks(text)):
            if behaviour.break_after is not None and i >= behaviour.break_after:
                # Ends the response without the terminating chunk: the client sees a broken stream.
                raise ConnectionAbortedError("the fake provider broke the stream off")
            if behaviour.chunk_delay:
                await asyncio.sleep(behaviour.chunk_delay)
            yield event({"content": piece})
        yield event({}, "stop")
        if include_usage:
            yield event({}, usage_part=usage)
        yield b"data: [DONE]\n\n"

    # -- control over HTTP (for a fake in another process) ---------------------------------------

    async def _control_behave(self, request: Request) -> Response:
        body = await request.json()
        model = body.pop("model")
        behaviour = asdict(self.behave(model, **body))
        behaviour.pop("reply")  # a callable: set in process only
        return JSONResponse(behaviour)

    async def _control_reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"reset": True})

    async def _control_requests(self, request: Request) -> Response:
        return JSONResponse([{"model": r.model, "body": r.body, "at": r.at} for r in self.calls()])


async def _cut_body(payload: bytes) -> AsyncIterator[bytes]:
    yield payload[: len(payload) // 2]
    raise ConnectionAbortedError("the fake provider broke the body off")


def _error(
    status: int, message: str, kind: str, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code or str(status)}}
    return JSONResponse(body, status_code=status, headers=headers)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible provider on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    fake = FakeOpenAI(args.host, args.port, args.api_key)
    print(f"fake OpenAI-compatible provider on {fake.base_url}", flush=True)
    uvicorn.run(fake.app, host=args.host, port=args.port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
