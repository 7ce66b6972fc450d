"""The API as a frontend on another origin uses it: Chromium runs the client page (static/client.js)
served from http://localhost:<its port>, and every request is the browser's own fetch, EventSource or
WebSocket to the gateway, so the browser's CORS and cookie rules decide what the page can read."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.browser.conftest import UPLOAD_LIMIT, UPLOAD_OVERHEAD, Page
from tests.fakes.openai_server import FakeOpenAI
from tests.support.users import PASSWORD, new_email, register
from tools.stack import Stack

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

AUTH = "/api/v1/auth"
DOCS = "/api/v1/documents"
ANALYSIS_EVENTS = ["status", "stage", "progress", "model", "synthesis", "completed", "failed"]


def failed_in_page(result: dict[str, Any]) -> bool:
    """The page's fetch threw (what the browser does when CORS refuses an answer)."""
    return str(result.get("error", "")).startswith("TypeError")


async def new_account(stack: Stack) -> str:
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=30) as client:
        return await register(client, new_email("browser"))


async def upload(page: Page, token: str, name: str, text: str) -> dict[str, Any]:
    out = await page.call("POST", DOCS, {"token": token, "file": {"name": name, "text": text}})
    assert out.get("status") == 201, out
    return out["body"]


async def http_only_cookies(context: Any) -> dict[str, dict[str, Any]]:
    """The cookies in the test's browser context, by name (only the gateway sets any: the page's
    server sets none); fails on one that script could read."""
    cookies = {c["name"]: c for c in await context.cookies()}
    readable = [name for name, c in cookies.items() if not c["httpOnly"]]
    assert not readable, f"cookies readable by script: {readable}"
    return cookies


async def test_register_login_upload_and_list_from_another_origin(open_page) -> None:
    page = await open_page()
    email = new_email("browser")
    reg = await page.call("POST", f"{AUTH}/register", {"json": {"email": email, "password": PASSWORD}})
    assert reg.get("status") == 201, reg
    login = await page.call("POST", f"{AUTH}/login", {"json": {"email": email, "password": PASSWORD}})
    assert login.get("status") == 200, login
    token = login["body"]["access_token"]

    doc = await upload(page, token, "notes.txt", "Minutes of the Tuesday meeting: the launch moves to May.")
    assert doc["name"] == "notes.txt"

    listing = await page.call("GET", DOCS, {"token": token})
    assert listing.get("status") == 200, listing
    assert [d["id"] for d in listing["body"]["items"]] == [doc["id"]]


async def test_an_upload_over_the_cap_is_a_413_the_page_can_read(open_page, token: str) -> None:
    page = await open_page()
    size = UPLOAD_LIMIT + UPLOAD_OVERHEAD + 8192
    out = await page.call("POST", DOCS, {"token": token, "file": {"name": "big.txt", "size": size}})
    # Not "TypeError: Failed to fetch": the refusal carries the CORS headers, so the page reads it.
    assert "error" not in out, out
    assert out["status"] == 413
    assert out["type"].startswith("application/problem+json")
    assert out["body"]["status"] == 413 and "limit" in out["body"]["detail"]
    # Nothing was stored.
    listing = await page.call("GET", DOCS, {"token": token})
    assert listing["body"]["items"] == []


async def test_an_origin_not_allowed_cannot_read_the_api(open_page, browser_stack: Stack) -> None:
    email = await new_account(browser_stack)
    credentials = {"json": {"email": email, "password": PASSWORD}}
    allowed, refused = await open_page("allowed"), await open_page("refused")

    # A credentialed request with a preflight (JSON), and a simple one (no preflight).
    assert (await allowed.call("POST", f"{AUTH}/login", credentials)).get("status") == 200
    assert (await allowed.call("GET", AUTH)).get("status") == 200

    login = await refused.call("POST", f"{AUTH}/login", credentials)
    assert failed_in_page(login), login
    directory = await refused.call("GET", AUTH)
    assert failed_in_page(directory), directory


async def test_a_trailing_slash_is_answered_by_the_gateway(open_page, gw: str, token: str) -> None:
    page = await open_page()
    doc = await upload(page, token, "slash.txt", "A document listed through a path with a trailing slash.")
    out = await page.call("GET", f"{DOCS}/", {"token": token})
    # No redirect to a service's own address (which the browser could not reach, nor read).
    assert "error" not in out, out
    assert out["status"] == 200, out
    assert out["url"].startswith(gw + "/"), out["url"]
    assert [d["id"] for d in out["body"]["items"]] == [doc["id"]]


async def test_cookie_login_refresh_and_logout(open_page, context, browser_stack: Stack, gw: str) -> None:
    email = await new_account(browser_stack)
    page = await open_page()
    login = await page.call("POST", f"{AUTH}/login", {"json": {"email": email, "password": PASSWORD, "cookie": True}})
    assert login.get("status") == 200, login
    access = login["body"]["access_token"]
    # The refresh token is in the cookie alone: nothing the page's script can read carries it.
    assert not login["body"].get("refresh_token"), login["body"]
    cookies = await http_only_cookies(context)
    assert cookies, "the login set no cookie"

    # Not readable by document.cookie, even on a page of the gateway's own origin and path.
    for cookie in cookies.values():
        own = await context.new_page()
        await own.goto(gw + (cookie["path"] if cookie["path"] != "/" else AUTH))
        assert cookie["value"] not in await own.evaluate("document.cookie")
        await own.close()

    refreshed = await page.call("POST", f"{AUTH}/refresh")
    assert refreshed.get("status") == 200, refreshed
    fresh = refreshed["body"]["access_token"]
    assert fresh != access
    # Rotation: the cookie now holds another refresh token.
    rotated = await http_only_cookies(context)
    assert {n: c["value"] for n, c in rotated.items()} != {n: c["value"] for n, c in cookies.items()}
    me = await page.call("GET", f"{AUTH}/me", {"token": fresh})
    assert me.get("status") == 200 and me["body"]["email"] == email, me

    logout = await page.call("POST", f"{AUTH}/logout", {"token": fresh})
    assert logout.get("status") == 204, logout
    assert not {n for n in await http_only_cookies(context) if n in rotated}, "logout left the cookie"
    again = await page.call("POST", f"{AUTH}/refresh")
    assert again.get("status") == 401, again


async def test_two_tabs_refreshing_at_once_both_keep_working(open_page, browser_stack: Stack) -> None:
    email = await new_account(browser_stack)
    first, second = await open_page(), await open_page()
    login = await first.call("POST", f"{AUTH}/login", {"json": {"email": email, "password": PASSWORD, "cookie": True}})
    assert login.get("status") == 200, login

    # Both tabs wait for one signal, then refresh with the same cookie at the same moment.
    await first.arm("POST", f"{AUTH}/refresh")
    await second.arm("POST", f"{AUTH}/refresh")
    await (await open_page()).fire()
    answers = [await first.armed(), await second.armed()]
    assert [a.get("status") for a in answers] == [200, 200], answers

    for tab, answer in zip((first, second), answers, strict=True):
        me = await tab.call("GET", f"{AUTH}/me", {"token": answer["body"]["access_token"]})
        assert me.get("status") == 200, me
    # The session survived: each tab refreshes again.
    for tab in (first, second):
        again = await tab.call("POST", f"{AUTH}/refresh")
        assert again.get("status") == 200, again
        me = await tab.call("GET", f"{AUTH}/me", {"token": again["body"]["access_token"]})
        assert me.get("status") == 200, me


async def test_analysis_events_through_an_event_source_with_a_ticket(
    open_page, token: str, fake_provider: FakeOpenAI
) -> None:
    fake_provider.behave("br-alpha", text="Alpha: the launch moves to May.")
    page = await open_page()
    doc = await upload(page, token, "launch.txt", "The launch, planned for April, moves to May.")
    analysis = {"kind": "summary", "models": ["br-alpha"]}
    started = await page.call("POST", f"{DOCS}/{doc['id']}/analyses", {"token": token, "json": analysis})
    assert started.get("status") == 202, started
    url = started["body"]["links"]["self"]

    # An EventSource sends no Authorization header: without a ticket it is refused.
    refused = await page.events(f"{url}/events", ANALYSIS_EVENTS, ["completed", "failed"])
    assert refused["error"] and not refused["events"], refused

    ticket = await page.call("POST", f"{url}/ticket", {"token": token})
    assert ticket.get("status") in (200, 201), ticket
    stream = await page.events(
        f"{url}/events?ticket={ticket['body']['ticket']}", ANALYSIS_EVENTS, ["completed", "failed"]
    )
    assert stream["error"] is None, stream
    names = [e["event"] for e in stream["events"]]
    assert names[0] == "status" and names[-1] == "completed", names
    assert [e["data"]["model"] for e in stream["events"] if e["event"] == "model"] == ["br-alpha"]


async def test_websocket_orchestration_cancelled_from_the_page(
    open_page, token: str, fake_provider: FakeOpenAI
) -> None:
    fake_provider.behave("br-alpha", text="Alpha answers at once.")
    # Still running when the page cancels (it never answers: the request's time budget ends it), so
    # the cancel always comes before the synthesis would start.
    fake_provider.behave("br-hang", hang=True)
    page = await open_page()
    request = {
        "prompt": "Which launch month?",
        "models": ["br-alpha", "br-hang"],
        "pattern": "synthesis",
        "synthesis_model": "br-writer",
        "timeout": 5,
    }
    out = await page.socket(
        "/api/v1/llm/orchestrate/ws", {"token": token, "request": request}, "result", ["cancelled", "done", "error"]
    )
    events = [m.get("event", m.get("type")) for m in out["messages"]]
    assert out["sentCancel"], out
    assert events[0] == "stage" and "result" in events, events
    assert events[-1] == "cancelled", out
    assert out["messages"][-1]["status"] == "cancelled"
    # No call started after the cancel: no synthesis.
    assert not [m for m in out["messages"] if m.get("stage") == "synthesis"], out
    assert fake_provider.calls("br-writer") == []


async def test_streamed_chat_read_from_a_readable_stream(open_page, token: str, fake_provider: FakeOpenAI) -> None:
    text = "Streamed to the browser, word by word, through the gateway."
    fake_provider.behave("br-chat", text=text)
    page = await open_page()
    body = {"model": "br-chat", "messages": [{"role": "user", "content": "Say it slowly."}], "stream": True}
    out = await page.stream("/v1/chat/completions", {"token": token, "json": body})
    assert "error" not in out, out
    assert out["status"] == 200 and out["type"].startswith("text/event-stream"), out
    data = [line[6:] for line in out["text"].splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == text
