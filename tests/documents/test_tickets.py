"""Tickets to an analysis' event stream, in process: what a browser's EventSource uses instead of an
Authorization header. Issued to the analysis' owner only, stored as a hash, valid once, for one
analysis, for ANALYSIS_TICKET_SECONDS; and never written to a log. (Through the gateway and with a
real analysis: test_tickets_e2e.py.)"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from shared.logs import ContextFilter, redact
from tests.documents.conftest import documents_app, new_user_id, upload
from tests.support.tokens import TokenIssuer
from ultrai_documents.analysis.service import BAD_TICKET
from ultrai_gateway.edge import is_ticket_stream

API = "/api/v1/documents"


async def _analysis(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    """A new analysis of a new document of the user's (it fails: there is no llm in process); its URL."""
    up = await upload(client, headers, f"ticket test {secrets.token_hex(8)}".encode(), "t.txt")
    assert up.status_code == 201, up.text
    resp = await client.post(
        f"{API}/{up.json()['id']}/analyses", headers=headers, json={"kind": "summary", "models": ["m"]}
    )
    assert resp.status_code == 202, resp.text
    return str(resp.headers["location"])


async def _ticket(client: httpx.AsyncClient, headers: dict[str, str], url: str) -> str:
    resp = await client.post(url + "/ticket", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    return str(resp.json()["ticket"])


def _refused(resp: httpx.Response) -> None:
    assert resp.status_code == 401, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["detail"] == BAD_TICKET


async def test_a_ticket_reads_the_events_without_an_authorization_header(
    client: httpx.AsyncClient, issuer: TokenIssuer
) -> None:
    h = issuer.headers(new_user_id())
    url = await _analysis(client, h)
    resp = await client.post(url + "/ticket", headers=h)
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"ticket", "expires_in"} and body["expires_in"] == 60
    # secrets.token_urlsafe(32): 256 random bits, 43 characters.
    assert len(body["ticket"]) == 43
    events = await client.get(url + "/events", params={"ticket": body["ticket"]})
    assert events.status_code == 200, events.text
    assert events.headers["content-type"].startswith("text/event-stream")
    assert events.text.startswith("id: ") and "event: status" in events.text
    assert "event: failed" in events.text
    # The header keeps working, with or without a ticket beside it (the ticket is then not looked at).
    assert "event: failed" in (await client.get(url + "/events", headers=h)).text


async def test_a_ticket_is_valid_once(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    h = issuer.headers(new_user_id())
    url = await _analysis(client, h)
    ticket = await _ticket(client, h, url)
    assert (await client.get(url + "/events", params={"ticket": ticket})).status_code == 200
    _refused(await client.get(url + "/events", params={"ticket": ticket}))


async def test_the_same_ticket_presented_at_once_twice_opens_one_stream(
    client: httpx.AsyncClient, issuer: TokenIssuer
) -> None:
    h = issuer.headers(new_user_id())
    url = await _analysis(client, h)
    ticket = await _ticket(client, h, url)
    answers = await asyncio.gather(*(client.get(url + "/events", params={"ticket": ticket}) for _ in range(4)))
    assert sorted(r.status_code for r in answers) == [200, 401, 401, 401]


async def test_a_ticket_is_for_one_analysis(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    h = issuer.headers(new_user_id())
    first = await _analysis(client, h)
    second = await _analysis(client, h)
    ticket = await _ticket(client, h, first)
    _refused(await client.get(second + "/events", params={"ticket": ticket}))
    # Presented on the wrong analysis, it is spent all the same.
    _refused(await client.get(first + "/events", params={"ticket": ticket}))


async def test_only_the_owner_gets_a_ticket(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    owner = issuer.headers(new_user_id())
    url = await _analysis(client, owner)
    stranger = await client.post(url + "/ticket", headers=issuer.headers(new_user_id()))
    assert stranger.status_code == 404
    assert stranger.headers["content-type"] == "application/problem+json"
    assert (await client.post(url + "/ticket")).status_code == 401
    missing = await client.post(url.rsplit("/", 1)[0] + "/" + "a" * 32 + "/ticket", headers=owner)
    assert missing.status_code == 404


async def test_forged_empty_and_missing_tickets_are_401(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    h = issuer.headers(new_user_id())
    url = await _analysis(client, h)
    real = await _ticket(client, h, url)
    for forged in (secrets.token_urlsafe(32), real[:-1], real + "A", "", "x" * 5000, "é ticket"):
        _refused(await client.get(url + "/events", params={"ticket": forged}))
    # No ticket and no header: the usual 401.
    resp = await client.get(url + "/events")
    assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Bearer")
    # An Authorization header that is not valid is not rescued by a ticket beside it.
    bad = await client.get(url + "/events", params={"ticket": real}, headers={"Authorization": "Bearer x"})
    assert bad.status_code == 401
    # None of the above spent the real ticket.
    assert (await client.get(url + "/events", params={"ticket": real})).status_code == 200


async def test_a_ticket_with_the_wrong_document_opens_nothing(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    h = issuer.headers(new_user_id())
    url = await _analysis(client, h)
    other = await _analysis(client, h)
    ticket = await _ticket(client, h, url)
    analysis_id = url.rsplit("/", 1)[1]
    other_document = other.split("/")[4]
    wrong = f"{API}/{other_document}/analyses/{analysis_id}/events"
    assert (await client.get(wrong, params={"ticket": ticket})).status_code == 404


async def test_an_expired_ticket_is_401(tmp_dir: Path, issuer: TokenIssuer, shared_db: str | None) -> None:
    async with documents_app(tmp_dir, issuer, shared_db, analysis_ticket_seconds=1) as client:
        h = issuer.headers(new_user_id())
        url = await _analysis(client, h)
        resp = await client.post(url + "/ticket", headers=h)
        assert resp.json()["expires_in"] == 1
        # Past its one second of life (waiting for an expiry, not measuring anything).
        await asyncio.sleep(1.2)
        _refused(await client.get(url + "/events", params={"ticket": resp.json()["ticket"]}))


async def test_only_a_hash_of_the_ticket_is_stored(tmp_dir: Path, issuer: TokenIssuer, fresh_db: str | None) -> None:
    async with documents_app(tmp_dir, issuer, fresh_db) as client:
        h = issuer.headers(new_user_id())
        url = await _analysis(client, h)
        ticket = await _ticket(client, h, url)
        stored = await _stored_hashes(tmp_dir, fresh_db)
        assert stored == [hashlib.sha256(ticket.encode()).hexdigest()]
        assert (await client.get(url + "/events", params={"ticket": ticket})).status_code == 200
        assert await _stored_hashes(tmp_dir, fresh_db) == []


async def test_deleting_the_document_deletes_its_tickets(
    tmp_dir: Path, issuer: TokenIssuer, fresh_db: str | None
) -> None:
    async with documents_app(tmp_dir, issuer, fresh_db) as client:
        h = issuer.headers(new_user_id())
        url = await _analysis(client, h)
        await _ticket(client, h, url)
        await client.get(url + "/events", headers=h)  # the analysis has ended
        assert (await client.delete(url.split("/analyses/")[0], headers=h)).status_code == 204
        assert await _stored_hashes(tmp_dir, fresh_db) == []


async def test_tickets_stay_out_of_the_log(
    client: httpx.AsyncClient, issuer: TokenIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    """The access log line names the path only, and what the service logs goes through the
    scrubbing filter, which redacts ``ticket=`` values wherever they appear."""
    h = issuer.headers(new_user_id())
    url = await _analysis(client, h)
    ticket = await _ticket(client, h, url)
    with caplog.at_level(logging.INFO):
        await client.get(url + "/events", params={"ticket": ticket})
        await client.get(url + "/events", params={"ticket": ticket})
    assert any("/events" in r.getMessage() for r in caplog.records)
    assert not any(ticket in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "line",
    [
        "GET /api/v1/documents/d/analyses/a/events?ticket={t} 200",
        "GET /x?last=3&ticket={t}&y=1",
        '{{"ticket": "{t}"}}',
        "ticket={t}",
    ],
)
def test_the_log_filter_redacts_tickets(line: str) -> None:
    ticket = secrets.token_urlsafe(32)
    assert ticket not in redact(line.format(t=ticket))
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", (line.format(t=ticket),), None)
    ContextFilter("documents").filter(record)
    assert ticket not in record.getMessage() and "[redacted]" in record.getMessage()


async def _stored_hashes(tmp: Path, database_url: str | None) -> list[str]:
    """The ticket_hash column of analysis_tickets, read straight from the service's database."""
    if database_url is None:
        import sqlite3

        with sqlite3.connect(tmp / "documents.db") as conn:
            return [row[0] for row in conn.execute("SELECT ticket_hash FROM analysis_tickets")]
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        return [row[0] for row in await conn.fetch("SELECT ticket_hash FROM documents.analysis_tickets")]
    finally:
        await conn.close()


def _request(method: str, target: str, headers: dict[str, str] | None = None) -> Request:
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    return Request(scope)


EVENTS = f"{API}/{'d' * 32}/analyses/{'a' * 32}/events"


@pytest.mark.parametrize(
    ("method", "target", "headers", "passes"),
    [
        ("GET", f"{EVENTS}?ticket=t", None, True),
        ("GET", f"{EVENTS}?last=1&ticket=t", None, True),
        ("GET", f"{EVENTS}?ticket=t", {"Authorization": "Bearer x"}, False),
        ("GET", f"{EVENTS}?ticket=t", {"Authorization": ""}, False),
        ("GET", f"{EVENTS}?ticket=", None, False),
        ("GET", EVENTS, None, False),
        ("GET", f"{EVENTS}?tickets=t", None, False),
        ("HEAD", f"{EVENTS}?ticket=t", None, False),
        ("POST", f"{EVENTS}?ticket=t", None, False),
        ("GET", f"{EVENTS}/?ticket=t", None, False),
        ("GET", f"{EVENTS}/more?ticket=t", None, False),
        ("GET", f"{API}/{'d' * 32}/analyses/{'a' * 32}?ticket=t", None, False),
        ("GET", f"{API}/{'d' * 32}?ticket=t", None, False),
        ("GET", f"{API}/../auth/analyses/x/events?ticket=t", None, False),
        ("GET", f"{API}/d/analyses/../../../../auth/me/events?ticket=t", None, False),
        ("GET", f"{API}/d/x/analyses/a/events?ticket=t", None, False),
        ("GET", "/api/v1/llm/d/analyses/a/events?ticket=t", None, False),
        ("GET", f"/x{EVENTS}?ticket=t", None, False),
    ],
)
def test_the_edge_lets_a_ticket_through_on_an_analysis_events_only(
    method: str, target: str, headers: dict[str, str] | None, passes: bool
) -> None:
    assert is_ticket_stream(_request(method, target, headers)) is passes
