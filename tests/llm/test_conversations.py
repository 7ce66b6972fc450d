"""Conversations (``/api/v1/llm/conversations``, ultrai_llm/conversations.py) on the real llm service
behind the gateway, with the fake provider: a conversation's earlier turns reach every model, each
answered run is stored as its next turn (JSON, SSE and WebSocket), and another user's conversation
does not exist for the caller."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.fakes.openai_server import FakeOpenAI
from tests.llm.conftest import parse_sse, unique
from tests.support.users import bearer, new_access_token
from tools.stack import Stack

pytestmark = pytest.mark.e2e
BASE = "/api/v1/llm/conversations"
ORCHESTRATE = "/api/v1/llm/orchestrate"
PROBLEM = "application/problem+json"


@pytest.fixture
async def fresh(llm_stack: Stack) -> Any:
    """A client of a new account (nothing of its own yet): its lists hold only what the test made."""
    token = await new_access_token(llm_stack.url("gateway"), "convo")
    async with httpx.AsyncClient(base_url=llm_stack.url("gateway"), headers=bearer(token), timeout=30) as client:
        yield client


async def new_conversation(client: httpx.AsyncClient, title: str | None = None) -> dict[str, Any]:
    r = await client.post(BASE, json={} if title is None else {"title": title})
    assert r.status_code == 201, r.text
    return r.json()


async def turn(client: httpx.AsyncClient, conversation_id: str, prompt: str, **extra: Any) -> dict[str, Any]:
    body = {"prompt": prompt, "models": ["convo-a", "convo-b"], "synthesis_model": "convo-w", **extra}
    r = await client.post(ORCHESTRATE, json={**body, "conversation_id": conversation_id})
    assert r.status_code == 200, r.text
    return r.json()


def history_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What came before the last message (the new question)."""
    return messages[:-1]


async def test_history_reaches_every_model_and_turns_are_stored(fresh, fake_provider: FakeOpenAI):
    fake_provider.behave("convo-a", text="Paris, said A.")
    fake_provider.behave("convo-b", text="Paris, said B.")
    fake_provider.behave("convo-w", text="The capital of France is Paris.")
    conversation = await new_conversation(fresh, "Geography")
    assert conversation["title"] == "Geography" and conversation["turns"] == 0
    first, second = unique("What is the capital of France?"), unique("And how many people live there?")

    answer = await turn(fresh, conversation["id"], first)
    assert answer["conversation"] == {"id": conversation["id"], "stored": True, "turn": 1}
    # The first turn has no history: each answering model got the question alone.
    for model in ("convo-a", "convo-b"):
        assert fake_provider.calls(model)[-1].body["messages"] == [{"role": "user", "content": first}]

    fake_provider.behave("convo-w", text="About two million people live in Paris.")
    answer = await turn(fresh, conversation["id"], second)
    assert answer["conversation"]["turn"] == 2 and answer["status"] == "completed"
    earlier = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": "The capital of France is Paris."},
    ]
    for model in ("convo-a", "convo-b"):
        sent = fake_provider.calls(model)[-1].body["messages"]
        assert sent == [*earlier, {"role": "user", "content": second}], model
    # The synthesis writer sees the conversation too, before its instruction with the new question.
    writer = fake_provider.calls("convo-w")[-1].body["messages"]
    assert history_of(writer) == earlier and second in writer[-1]["content"]

    r = await fresh.get(f"{BASE}/{conversation['id']}")
    assert r.status_code == 200, r.text
    detail = r.json()
    assert detail["turns"] == 2 and [t["seq"] for t in detail["items"]] == [1, 2]
    one, two = detail["items"]
    assert one["prompt"] == first
    assert one["answers"] == [{"model": "convo-w", "text": "The capital of France is Paris."}]
    assert two["prompt"] == second and two["answers"][0]["text"] == "About two million people live in Paris."
    assert two["status"] == "completed" and two["pattern"] == "synthesis" and two["orchestration_id"] == answer["id"]
    assert two["usage"] == answer["usage"] and two["usage"]["prompt_tokens"] > 0
    assert two["created_at"] >= one["created_at"]

    listed = (await fresh.get(BASE)).json()
    assert [(c["id"], c["turns"]) for c in listed["items"]] == [(conversation["id"], 2)]


async def test_the_estimate_counts_the_history(fresh, fake_provider: FakeOpenAI):
    fake_provider.behave("convo-w", text="A stored answer of several words for the estimate to count.")
    conversation = await new_conversation(fresh)
    await turn(fresh, conversation["id"], unique("A first question?"))
    calls_before = len(fake_provider.calls())
    body = {"prompt": unique("A second question?"), "models": ["convo-a", "convo-b"], "synthesis_model": "convo-w"}
    alone = await fresh.post(ORCHESTRATE + "/estimate", json=body)
    within = await fresh.post(ORCHESTRATE + "/estimate", json={**body, "conversation_id": conversation["id"]})
    assert alone.status_code == within.status_code == 200, (alone.text, within.text)
    tokens = {(c["stage"], c["model"]): c["input_tokens"] for c in alone.json()["calls"]}
    more = {(c["stage"], c["model"]): c["input_tokens"] for c in within.json()["calls"]}
    assert set(tokens) == set(more) == {("answer", "convo-a"), ("answer", "convo-b"), ("synthesis", "convo-w")}
    assert all(more[call] > tokens[call] for call in tokens), (tokens, more)
    assert len(fake_provider.calls()) == calls_before  # an estimate calls nothing


async def test_a_pattern_without_synthesis_stores_every_answer(fresh, fake_provider: FakeOpenAI):
    fake_provider.behave("convo-a", text="Red.")
    fake_provider.behave("convo-b", text="Blue.")
    conversation = await new_conversation(fresh)
    assert conversation["title"] is None
    first = unique("Name a colour.")
    await turn(fresh, conversation["id"], first, pattern="parallel", synthesis_model=None)
    second = unique("Why that one?")
    await turn(fresh, conversation["id"], second, pattern="parallel", synthesis_model=None)
    for model in ("convo-a", "convo-b"):
        sent = fake_provider.calls(model)[-1].body["messages"]
        assert sent[0] == {"role": "user", "content": first} and sent[-1] == {"role": "user", "content": second}
        assert sent[1]["role"] == "assistant" and "Red." in sent[1]["content"] and "Blue." in sent[1]["content"]
    detail = (await fresh.get(f"{BASE}/{conversation['id']}")).json()
    stored = detail["items"][0]["answers"]
    assert stored == [{"model": "convo-a", "text": "Red."}, {"model": "convo-b", "text": "Blue."}]


async def test_a_run_that_failed_before_any_answer_is_not_stored(fresh, fake_provider: FakeOpenAI):
    fake_provider.behave("convo-a", status=400)
    fake_provider.behave("convo-b", status=400)
    conversation = await new_conversation(fresh)
    r = await fresh.post(
        ORCHESTRATE,
        json={"prompt": unique(), "models": ["convo-a", "convo-b"], "conversation_id": conversation["id"]},
    )
    assert r.status_code == 502, r.text
    detail = (await fresh.get(f"{BASE}/{conversation['id']}")).json()
    assert detail["turns"] == 0 and detail["items"] == []


async def test_a_partial_run_is_stored(fresh, fake_provider: FakeOpenAI):
    fake_provider.behave("convo-a", text="Only A answered.")
    fake_provider.behave("convo-b", status=400)
    conversation = await new_conversation(fresh)
    answer = await turn(fresh, conversation["id"], unique(), pattern="parallel", synthesis_model=None)
    assert answer["status"] == "partial" and answer["conversation"]["stored"] is True
    detail = (await fresh.get(f"{BASE}/{conversation['id']}")).json()
    assert detail["items"][0]["status"] == "partial"
    assert detail["items"][0]["answers"] == [{"model": "convo-a", "text": "Only A answered."}]


async def test_oldest_turns_are_dropped_for_a_small_context_model(fresh, fake_provider: FakeOpenAI):
    # Each turn is some 80 tokens; convo-narrow (250 tokens) takes the question and two turns at most.
    words = " ".join(f"word{i}" for i in range(30))
    fake_provider.behave("convo-a", text="ok")
    fake_provider.behave("convo-narrow", text="ok")
    fake_provider.behave("convo-w", text=f"The answer is {words}.")
    conversation = await new_conversation(fresh)
    prompts = [unique(f"Question {n} about {words}?") for n in range(5)]
    body = {"models": ["convo-a", "convo-narrow"], "synthesis_model": "convo-w"}
    for prompt in prompts:
        answer = await turn(fresh, conversation["id"], prompt, **body)
        assert answer["status"] == "completed", answer
    said = {"role": "assistant", "content": f"The answer is {words}."}
    full = [message for prompt in prompts[:-1] for message in ({"role": "user", "content": prompt}, said)]
    # The large model got every earlier turn; the small one only the most recent ones that fit.
    assert history_of(fake_provider.calls("convo-a")[-1].body["messages"]) == full
    narrow = history_of(fake_provider.calls("convo-narrow")[-1].body["messages"])
    assert 2 <= len(narrow) < len(full) and len(narrow) % 2 == 0
    assert narrow == full[-len(narrow) :]  # a suffix: the oldest turns went first
    assert fake_provider.calls("convo-narrow")[-1].body["messages"][-1]["content"] == prompts[-1]


async def test_streamed_runs_are_stored(fresh, llm_stack: Stack, fake_provider: FakeOpenAI):
    fake_provider.behave("convo-w", text="Streamed synthesis.")
    conversation = await new_conversation(fresh)
    prompt = unique("Over server-sent events?")
    r = await fresh.post(
        ORCHESTRATE,
        json={
            "prompt": prompt,
            "models": ["convo-a", "convo-b"],
            "synthesis_model": "convo-w",
            "stream": True,
            "conversation_id": conversation["id"],
        },
    )
    assert r.status_code == 200, r.text
    done = [data for event, data in parse_sse(r.text) if event == "done"]
    assert done and done[0]["conversation"] == {"id": conversation["id"], "stored": True, "turn": 1}

    token = fresh.headers["Authorization"].removeprefix("Bearer ")
    ws_prompt = unique("Over a WebSocket?")
    request = {
        "prompt": ws_prompt,
        "models": ["convo-a", "convo-b"],
        "synthesis_model": "convo-w",
        "conversation_id": conversation["id"],
    }
    url = llm_stack.url("gateway").replace("http://", "ws://") + ORCHESTRATE + "/ws"
    events = []
    async with connect(url) as ws:
        await ws.send(json.dumps({"token": token, "request": request}))
        with pytest.raises(ConnectionClosed):
            while True:
                events.append(json.loads(await ws.recv()))
    assert events[-1]["event"] == "done" and events[-1]["conversation"]["turn"] == 2
    # The WebSocket run got the first (streamed) turn as history.
    sent = fake_provider.calls("convo-a")[-1].body["messages"]
    assert sent[:2] == [{"role": "user", "content": prompt}, {"role": "assistant", "content": "Streamed synthesis."}]
    detail = (await fresh.get(f"{BASE}/{conversation['id']}")).json()
    assert [t["prompt"] for t in detail["items"]] == [prompt, ws_prompt]


async def test_rename_delete_and_paging(fresh):
    made = [await new_conversation(fresh, f"Topic {n}") for n in range(3)]
    page = await fresh.get(BASE, params={"limit": 2})
    assert page.status_code == 200, page.text
    first = page.json()
    assert [c["id"] for c in first["items"]] == [made[2]["id"], made[1]["id"]]  # newest first
    assert first["next_cursor"]
    second = (await fresh.get(BASE, params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [c["id"] for c in second["items"]] == [made[0]["id"]] and second["next_cursor"] is None

    r = await fresh.patch(f"{BASE}/{made[0]['id']}", json={"title": "  Renamed  "})
    assert r.status_code == 200 and r.json()["title"] == "Renamed"
    assert (await fresh.get(f"{BASE}/{made[0]['id']}")).json()["title"] == "Renamed"
    r = await fresh.patch(f"{BASE}/{made[0]['id']}", json={"title": " "})
    assert r.status_code == 200 and r.json()["title"] is None

    r = await fresh.delete(f"{BASE}/{made[1]['id']}")
    assert r.status_code == 204
    r = await fresh.get(f"{BASE}/{made[1]['id']}")
    assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM)
    assert [c["id"] for c in (await fresh.get(BASE)).json()["items"]] == [made[2]["id"], made[0]["id"]]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", BASE, {"title": "x" * 201}, 422),
        ("POST", BASE, {"title": "ok", "colour": "red"}, 422),
        ("PATCH", f"{BASE}/0123456789abcdef0123456789abcdef", {}, 422),  # a rename names the title
        ("GET", f"{BASE}?limit=0", None, 422),
        ("GET", f"{BASE}?limit=101", None, 422),
        ("GET", f"{BASE}?cursor=not-a-cursor", None, 400),
        ("GET", f"{BASE}/{'f' * 65}", None, 422),
        ("GET", f"{BASE}/0123456789abcdef0123456789abcdef", None, 404),
    ],
)
async def test_bad_input_is_a_problem(fresh, method: str, path: str, body: Any, status: int):
    r = await fresh.request(method, path, json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)


async def test_another_users_conversation_does_not_exist(fresh, llm_stack: Stack, fake_provider: FakeOpenAI):
    conversation = await new_conversation(fresh, "Mine")
    await turn(fresh, conversation["id"], unique("A private question?"))
    other_token = await new_access_token(llm_stack.url("gateway"), "other")
    url = f"{BASE}/{conversation['id']}"
    async with httpx.AsyncClient(base_url=llm_stack.url("gateway"), headers=bearer(other_token), timeout=30) as other:
        for method, body in (("GET", None), ("PATCH", {"title": "Theirs"}), ("DELETE", None)):
            r = await other.request(method, url, json=body)
            assert r.status_code == 404, (method, r.text)
            assert r.headers["content-type"].startswith(PROBLEM)
        assert (await other.get(BASE)).json()["items"] == []

        fake_provider.reset()
        request = {"prompt": unique(), "models": ["convo-a", "convo-b"], "conversation_id": conversation["id"]}
        for path in (ORCHESTRATE, ORCHESTRATE + "/estimate"):
            r = await other.post(path, json=request)
            assert r.status_code == 404, (path, r.text)
        r = await other.post(ORCHESTRATE, json={**request, "stream": True})
        assert r.status_code == 404, r.text
        ws_url = llm_stack.url("gateway").replace("http://", "ws://") + ORCHESTRATE + "/ws"
        async with connect(ws_url) as ws:
            await ws.send(json.dumps({"token": other_token, "request": request}))
            error = json.loads(await ws.recv())
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert error["event"] == "error" and error["status"] == 404
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
        assert fake_provider.calls() == []  # no provider call for any of them

    # Unchanged for its owner.
    detail = (await fresh.get(url)).json()
    assert detail["title"] == "Mine" and detail["turns"] == 1
