"""Orchestration over a WebSocket (``/api/v1/llm/orchestrate/ws``, ultrai_llm/sockets.py), on the
real llm service with the fake provider, both straight to the service and through the gateway
(which checks the first message's token itself and holds one of the account's slots)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from tests.fakes.openai_server import FakeOpenAI
from tests.llm.conftest import unique
from tests.support.keys import new_key, revoke_key
from tests.support.users import bearer, new_access_token
from tests.support.waiting import eventually
from tools.stack import Stack

pytestmark = pytest.mark.e2e
PATH = "/api/v1/llm/orchestrate/ws"
OnEvent = Callable[[ClientConnection, dict[str, Any]], Awaitable[None]]


def ws_url(stack: Stack, service: str) -> str:
    return stack.url(service).replace("http://", "ws://") + PATH


async def orchestrate(url: str, first: dict[str, Any] | str, on_event: OnEvent | None = None) -> tuple[list, Close]:
    """Send the first message; every event received, and the close that ended the socket."""
    events: list[dict[str, Any]] = []
    async with connect(url) as ws:
        await ws.send(first if isinstance(first, str) else json.dumps(first))
        try:
            while True:
                event = json.loads(await ws.recv())
                events.append(event)
                if on_event is not None:
                    await on_event(ws, event)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "the socket ended without a close frame"
            return events, exc.rcvd


@pytest.mark.parametrize("service", ["llm", "gateway"])
async def test_the_events_arrive_in_order_with_their_names(
    llm_stack: Stack, token: str, fake_provider: FakeOpenAI, service: str
):
    fake_provider.behave("stream-a", text="one two three four", chunk_delay=0.01)
    fake_provider.behave("stream-b", text="five six")
    fake_provider.behave("writer", text="the final word")
    request = {"prompt": unique(), "models": ["stream-a", "stream-b"], "synthesis_model": "writer"}
    events, close = await orchestrate(ws_url(llm_stack, service), {"token": token, "request": request})
    assert close.code == 1000
    names = [e["event"] for e in events]
    assert names[0] == "stage" and names[-1] == "done"
    assert set(names) == {"stage", "delta", "result", "done"}
    assert [e["stage"] for e in events if e["event"] == "stage"] == ["answer", "synthesis"]
    # The synthesis stage starts after both answers' results, as in the SSE stream.
    synthesis_at = names.index("stage", 1)
    assert names[:synthesis_at].count("result") == 2
    deltas = [e for e in events if e["event"] == "delta"]
    a = [e["text"] for e in deltas if e["model"] == "stream-a" and e["stage"] == "answer"]
    assert len(a) > 1 and "".join(a) == "one two three four"
    assert "".join(e["text"] for e in deltas if e["model"] == "writer") == "the final word"
    done = events[-1]
    assert done["status"] == "completed" and done["synthesis"]["text"] == "the final word"
    assert {r["model"] for r in done["results"]} == {"stream-a", "stream-b"}


@pytest.mark.parametrize(
    "first",
    [{"request": {"prompt": "x", "models": ["alpha"]}}, {"token": "not.a.token", "request": {"prompt": "x"}}],
    ids=["missing", "invalid"],
)
async def test_a_missing_or_invalid_token_closes_with_4401_and_runs_nothing(
    llm_stack: Stack, fake_provider: FakeOpenAI, first: dict
):
    # Straight to the service: the problem, then the close.
    events, close = await orchestrate(ws_url(llm_stack, "llm"), first)
    assert close.code == 4401 and close.reason
    assert [e["event"] for e in events] == ["error"] and events[0]["status"] == 401
    # Through the gateway: refused there, before the service is even connected.
    events, close = await orchestrate(ws_url(llm_stack, "gateway"), first)
    assert close.code == 4401 and close.reason
    assert fake_provider.calls() == []


@pytest.mark.parametrize("service", ["llm", "gateway"])
async def test_an_invalid_request_gets_the_problem_then_a_close(
    llm_stack: Stack, token: str, fake_provider: FakeOpenAI, service: str
):
    url = ws_url(llm_stack, service)
    events, close = await orchestrate(url, {"token": token, "request": {"prompt": "", "pattern": "vote"}})
    assert close.code == 4422
    assert [e["event"] for e in events] == ["error"]
    problem = events[0]
    assert problem["status"] == 422 and problem["title"] == "Validation failed"
    assert {e["field"] for e in problem["errors"]} == {"request.prompt", "request.pattern"}
    # Refused by the plan, as the HTTP route refuses it: an unknown model.
    events, close = await orchestrate(url, {"token": token, "request": {"prompt": "x", "models": ["nope"]}})
    assert close.code == 4422 and events[0]["status"] == 422 and "nope" in events[0]["detail"]
    assert fake_provider.calls() == []


async def test_a_first_message_that_is_not_a_json_object_is_a_400(llm_stack: Stack, token: str):
    events, close = await orchestrate(ws_url(llm_stack, "llm"), "hello")
    assert close.code == 4400 and events[0]["event"] == "error" and events[0]["status"] == 400


async def test_cancel_mid_run_stops_the_calls_not_yet_made(
    llm_stack: Stack, gateway: httpx.AsyncClient, token: str, fake_provider: FakeOpenAI
):
    # The synthesis is planned after two answers; "beta" is still answering when the client cancels.
    fake_provider.behave("alpha", text="quick", prompt_tokens=4, completion_tokens=2)
    fake_provider.behave("beta", text="slow but sure", delay=3, prompt_tokens=6, completion_tokens=3)
    fake_provider.behave("writer", text="never written")

    async def requests_of(model: str) -> int:
        usage = (await gateway.get("/api/v1/llm/usage")).json()
        return {m["model"]: m for m in usage["models"]}.get(model, {"requests": 0})["requests"]

    before = await requests_of("beta")

    async def cancel_after_the_first_result(ws: ClientConnection, event: dict) -> None:
        if event["event"] == "result" and event["model"] == "alpha":
            await ws.send(json.dumps({"type": "cancel"}))

    request = {"prompt": unique(), "models": ["alpha", "beta"], "synthesis_model": "writer"}
    events, close = await orchestrate(
        ws_url(llm_stack, "gateway"), {"token": token, "request": request}, cancel_after_the_first_result
    )
    assert close.code == 1000
    names = [e["event"] for e in events]
    assert names[-1] == "cancelled" and "done" not in names
    assert [e["stage"] for e in events if e["event"] == "stage"] == ["answer"]
    final = events[-1]
    assert final["status"] == "cancelled" and final["synthesis"] is None
    # The call under way finished and counts; the synthesis was never asked for.
    assert {r["model"]: r["status"] for r in final["results"]} == {"alpha": "ok", "beta": "ok"}
    assert len(fake_provider.calls()) == 2 and fake_provider.calls("writer") == []
    await eventually(lambda: requests_of("beta"), lambda n: n == before + 1, what="beta's call recorded")


async def test_the_gateway_holds_an_account_slot_per_socket(llm_stack: Stack, fake_provider: FakeOpenAI):
    """MAX_STREAMS_PER_USER (10 in the stack) sockets of one account run; one more is closed 4429."""
    fake_provider.behave("hang", hang=True)
    token = await new_access_token(llm_stack.url("gateway"), "ws-slots")
    first = json.dumps({"token": token, "request": {"prompt": unique(), "models": ["hang"], "pattern": "parallel"}})
    url = ws_url(llm_stack, "gateway")
    held = [await connect(url).__aenter__() for _ in range(10)]
    try:
        for ws in held:
            await ws.send(first)
        for ws in held:  # each is running: its first event has come
            assert json.loads(await ws.recv())["event"] == "stage"
        events, close = await orchestrate(url, first)
        assert close.code == 4429 and events == []
    finally:
        await asyncio.gather(*(ws.close() for ws in held))

    async def one_more() -> str:
        async with connect(url) as ws:
            await ws.send(first)
            try:
                return str(json.loads(await ws.recv())["event"])
            except ConnectionClosed as exc:
                return f"closed with {exc.rcvd.code if exc.rcvd else None}"

    # The closed sockets gave their slots back.
    await eventually(one_more, lambda first_event: first_event == "stage", what="a slot free again")


# ---- API keys on the socket ----------------------------------------------------------------------


async def key_usage(stack: Stack, token: str, key_id: str) -> int:
    """Requests recorded under the key, as the account's usage lists them."""
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=30) as client:
        usage = (await client.get("/api/v1/llm/usage", headers=bearer(token))).json()
    return {row["key_id"]: row for row in usage["keys"]}.get(key_id, {"requests": 0})["requests"]


@pytest.mark.parametrize("service", ["llm", "gateway"])
async def test_an_api_key_with_the_llm_scope_runs_and_its_calls_are_the_keys(
    llm_stack: Stack, fake_provider: FakeOpenAI, service: str
):
    token = await new_access_token(llm_stack.url("gateway"), "ws-key")
    made = await new_key(llm_stack.url("gateway"), token, scopes=["llm"])
    fake_provider.behave("stream-a", text="with a key")
    request = {"prompt": unique(), "models": ["stream-a"], "pattern": "parallel"}
    events, close = await orchestrate(ws_url(llm_stack, service), {"token": made["key"], "request": request})
    assert close.code == 1000, close
    assert events[-1]["event"] == "done" and events[-1]["results"][0]["text"] == "with a key"
    # Recorded under the key, as an HTTP call made with it would be.
    assert await key_usage(llm_stack, token, made["id"]) == 1


@pytest.mark.parametrize("service", ["llm", "gateway"])
async def test_a_key_without_the_llm_scope_gets_the_http_refusal_as_4403(
    llm_stack: Stack, fake_provider: FakeOpenAI, service: str
):
    token = await new_access_token(llm_stack.url("gateway"), "ws-scope")
    key = (await new_key(llm_stack.url("gateway"), token, scopes=["documents:read"]))["key"]
    request = {"prompt": unique(), "models": ["alpha"], "pattern": "parallel"}
    async with httpx.AsyncClient(base_url=llm_stack.url(service), timeout=30) as client:
        http = await client.post("/api/v1/llm/orchestrate", json=request, headers=bearer(key))
    assert http.status_code == 403
    events, close = await orchestrate(ws_url(llm_stack, service), {"token": key, "request": request})
    assert close.code == 4403 and close.reason == http.json()["detail"]
    if service == "llm":  # the service sends the problem first; the gateway only closes
        assert [e["event"] for e in events] == ["error"] and events[0]["status"] == 403
    assert key not in json.dumps(events) + close.reason
    assert fake_provider.calls("alpha") == []


@pytest.mark.parametrize("service", ["llm", "gateway"])
async def test_a_keys_rpm_holds_for_sockets(llm_stack: Stack, fake_provider: FakeOpenAI, service: str):
    token = await new_access_token(llm_stack.url("gateway"), "ws-rpm")
    key = (await new_key(llm_stack.url("gateway"), token, scopes=["llm"], rpm=1))["key"]
    url = ws_url(llm_stack, service)
    request = {"prompt": unique(), "models": ["gamma"], "pattern": "parallel"}
    _, close = await orchestrate(url, {"token": key, "request": request})
    assert close.code == 1000
    request["prompt"] = unique()
    events, close = await orchestrate(url, {"token": key, "request": request})
    assert close.code == 4429, close
    assert events[-1]["event"] == "error" and events[-1]["status"] == 429
    assert len(fake_provider.calls("gamma")) == 1


@pytest.mark.parametrize("service", ["llm", "gateway"])
async def test_a_revoked_key_is_refused_on_a_new_socket(llm_stack: Stack, fake_provider: FakeOpenAI, service: str):
    token = await new_access_token(llm_stack.url("gateway"), "ws-revoked")
    made = await new_key(llm_stack.url("gateway"), token, scopes=["llm"])
    url = ws_url(llm_stack, service)

    async def close_code() -> int:
        request = {"prompt": unique(), "models": ["delta"], "pattern": "parallel"}
        _, close = await orchestrate(url, {"token": made["key"], "request": request})
        return close.code

    assert await close_code() == 1000
    await revoke_key(llm_stack.url("gateway"), token, made["id"])
    await eventually(close_code, lambda code: code == 4401, what="the revoked key refused", timeout=5)
    calls = len(fake_provider.calls("delta"))
    assert await close_code() == 4401
    assert len(fake_provider.calls("delta")) == calls


async def test_a_key_revoked_mid_run_starts_no_further_stage(llm_stack: Stack, fake_provider: FakeOpenAI):
    """The answer stage under way finishes (and counts under the key); the synthesis never starts
    once the revocation has reached the service, and the socket ends with 4401."""
    token = await new_access_token(llm_stack.url("gateway"), "ws-mid-run")
    made = await new_key(llm_stack.url("gateway"), token, scopes=["llm"])
    fake_provider.behave("epsilon", text="first")
    gate = fake_provider.hold("stream-b")  # still answering when the key is revoked
    fake_provider.behave("writer", text="never written")

    async def revoke_after_the_first_result(ws: ClientConnection, event: dict) -> None:
        if event["event"] == "result" and event["model"] == "epsilon":
            await revoke_key(llm_stack.url("gateway"), token, made["id"])

            async def status() -> int:  # the llm service has learned of the revocation
                async with httpx.AsyncClient(base_url=llm_stack.url("llm"), timeout=30) as client:
                    return (await client.get("/api/v1/llm/models", headers=bearer(made["key"]))).status_code

            await eventually(status, lambda s: s == 401, what="llm refusing the revoked key", timeout=5)
            gate.set()

    request = {"prompt": unique(), "models": ["epsilon", "stream-b"], "synthesis_model": "writer"}
    events, close = await orchestrate(
        ws_url(llm_stack, "gateway"), {"token": made["key"], "request": request}, revoke_after_the_first_result
    )
    assert close.code == 4401, close
    names = [e["event"] for e in events]
    assert names[-1] == "error" and events[-1]["status"] == 401 and "done" not in names
    assert {e["model"] for e in events if e["event"] == "result"} == {"epsilon", "stream-b"}
    assert [e["stage"] for e in events if e["event"] == "stage"] == ["answer"]
    assert fake_provider.calls("writer") == []
    # Both answers were made with the key and count under it.
    await eventually(lambda: key_usage(llm_stack, token, made["id"]), lambda n: n == 2, what="both calls recorded")
