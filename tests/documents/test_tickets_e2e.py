"""Tickets to an analysis' event stream among the real processes: a browser's EventSource (no
Authorization header, ``?ticket=``) follows a real analysis through the gateway to its end; the
gateway lets a ticket through on that path only; and neither service writes the ticket to its log."""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx
import pytest

from tests.documents.conftest import make_pdf
from tests.documents.test_e2e import API, docs_stack, gateway  # noqa: F401  (the stack and a client)
from tests.fakes.openai_server import FakeOpenAI
from tests.support.logs import reached, read, wait_for_log
from tools.stack import Stack
from ultrai_documents.analysis.service import BAD_TICKET

pytestmark = pytest.mark.e2e

BEHIND_THE_EDGE = ("auth", "documents", "llm")


async def _analysis(client: httpx.AsyncClient, fake_provider: FakeOpenAI) -> str:
    """A new analysis with a synthesis (two models and a synthesis model on the fake provider); its URL."""
    fake_provider.behave("doc-alpha", text="Alpha: the memo is about tickets.")
    fake_provider.behave("doc-beta", text="Beta: tickets, once each.")
    fake_provider.behave("doc-synth", text="Synthesis: single-use tickets.")
    data = make_pdf([f"Ticket memo {secrets.token_hex(8)}.", "Each ticket is used once."])
    up = await client.post(API, files={"file": ("memo.pdf", data, "application/octet-stream")})
    assert up.status_code == 201, up.text
    body = {"kind": "summary", "models": ["doc-alpha", "doc-beta"], "synthesis_model": "doc-synth"}
    resp = await client.post(f"{API}/{up.json()['id']}/analyses", json=body)
    assert resp.status_code == 202, resp.text
    return str(resp.headers["location"])


async def _ticket(client: httpx.AsyncClient, url: str) -> str:
    resp = await client.post(url + "/ticket")
    assert resp.status_code == 200, resp.text
    return str(resp.json()["ticket"])


async def _event_source(base: str, url: str, ticket: str, rid: str) -> list[tuple[str, dict[str, Any]]]:
    """What a browser's EventSource does: a GET with no Authorization header, the ticket in the URL."""
    events: list[tuple[str, dict[str, Any]]] = []
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", "X-Request-ID": rid}
    async with (
        httpx.AsyncClient(base_url=base, timeout=60) as client,
        client.stream("GET", url + "/events", params={"ticket": ticket}, headers=headers) as resp,
    ):
        assert resp.status_code == 200, await resp.aread()
        assert resp.headers["content-type"].startswith("text/event-stream")
        name = None
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name or "message", json.loads(line[6:])))
    return events


async def test_an_event_source_with_a_ticket_follows_the_analysis_to_its_end(
    docs_stack: Stack,  # noqa: F811
    gateway: httpx.AsyncClient,  # noqa: F811
    fake_provider: FakeOpenAI,
) -> None:
    url = await _analysis(gateway, fake_provider)
    ticket = await _ticket(gateway, url)
    rid = f"ticket-{secrets.token_hex(6)}"
    events = await _event_source(docs_stack.url("gateway"), url, ticket, rid)

    names = [name for name, _ in events]
    assert names[0] == "status" and names[-1] == "completed"
    assert sorted(d["model"] for n, d in events if n == "model") == ["doc-alpha", "doc-beta"]
    synthesis = [d for n, d in events if n == "synthesis"]
    assert len(synthesis) == 1
    assert synthesis[0]["model"] == "doc-synth" and synthesis[0]["status"] == "ok"
    assert synthesis[0]["completion_tokens"] > 0 and synthesis[0]["error"] is None
    # The synthesis comes after every model's answer and before the end.
    assert names.index("synthesis") > max(i for i, n in enumerate(names) if n == "model")

    # The same ticket again: refused by the documents service (the gateway let it through).
    again_rid = f"again-{secrets.token_hex(6)}"
    async with httpx.AsyncClient(base_url=docs_stack.url("gateway"), timeout=15) as browser:
        again = await browser.get(url + "/events", params={"ticket": ticket}, headers={"X-Request-ID": again_rid})
    assert again.status_code == 401 and again.json()["detail"] == BAD_TICKET
    assert ticket not in again.text

    # Both services logged both requests, and neither wrote the ticket.
    for name in ("gateway", "documents"):
        log = docs_stack.workdir / f"{name}.log"
        await wait_for_log(log, rid)
        await wait_for_log(log, again_rid)
        assert ticket not in read(log), f"the ticket is in {name}.log"


async def test_a_ticket_passes_the_edge_on_an_analysis_events_only(
    docs_stack: Stack,  # noqa: F811
    gateway: httpx.AsyncClient,  # noqa: F811
    fake_provider: FakeOpenAI,
) -> None:
    url = await _analysis(gateway, fake_provider)
    ticket = await _ticket(gateway, url)
    document = url.split("/analyses/")[0]
    base = docs_stack.url("gateway")
    async with httpx.AsyncClient(base_url=base, timeout=15) as browser:
        # Elsewhere the ticket is no credential: refused at the edge, unseen by the services.
        for method, path in (
            ("GET", url),
            ("GET", document),
            ("GET", url + "/events/x"),
            ("POST", url + "/events"),
            ("HEAD", url + "/events"),
            ("POST", url + "/ticket"),
            ("DELETE", document),
            ("GET", "/api/v1/auth/me"),
            ("GET", "/api/v1/llm/models"),
            ("GET", "/v1/models"),
        ):
            rid = f"edge-{secrets.token_hex(6)}"
            resp = await browser.request(method, path, params={"ticket": ticket}, headers={"X-Request-ID": rid})
            assert resp.status_code == 401, (method, path, resp.status_code)
            assert await reached(docs_stack, rid, BEHIND_THE_EDGE) == [], (method, path)
        # An empty ticket is no ticket.
        rid = f"edge-{secrets.token_hex(6)}"
        resp = await browser.get(url + "/events", params={"ticket": ""}, headers={"X-Request-ID": rid})
        assert resp.status_code == 401 and await reached(docs_stack, rid, BEHIND_THE_EDGE) == []

        # On the events path a forged ticket reaches the documents service, which refuses it.
        rid = f"forged-{secrets.token_hex(6)}"
        forged = await browser.get(
            url + "/events", params={"ticket": secrets.token_urlsafe(32)}, headers={"X-Request-ID": rid}
        )
        assert forged.status_code == 401 and forged.json()["detail"] == BAD_TICKET
        assert await reached(docs_stack, rid, BEHIND_THE_EDGE) == ["documents"]

        # None of that spent the real ticket.
        events = await browser.get(url + "/events", params={"ticket": ticket})
        assert events.status_code == 200 and "event: completed" in events.text
    for name in ("gateway", "documents"):
        assert ticket not in read(docs_stack.workdir / f"{name}.log"), f"the ticket is in {name}.log"
