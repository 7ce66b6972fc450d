"""The event streams of one analysis in one process share one reader: the database is read per
notification, not per notification and per watcher. In process, with an llm that accepts
connections and never answers (the analysis stays running until it is cancelled)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.engine import Engine

from tests.documents.conftest import documents_app, new_user_id, upload
from tests.support.tokens import TokenIssuer
from tests.support.waiting import eventually
from ultrai_documents.analysis import events

API = "/api/v1/documents"


@contextmanager
def event_reads() -> Iterator[list[str]]:
    """The statements that read an analysis' events (``events_after``), as they run."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM analysis_events" in statement and "ORDER BY analysis_events.id" in statement:
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def streams_of(analysis_id: str) -> int:
    return sum(feed.streams for feeds in events._FEEDS.values() for a, feed in feeds.items() if a == analysis_id)


async def _watched_until_cancelled(client: httpx.AsyncClient, headers: dict[str, str], doc: str, watchers: int) -> int:
    """Start an analysis, stream it with ``watchers`` clients at once, cancel it; returns how many
    times the database was read for its events meanwhile (every stream got every event)."""
    resp = await client.post(f"{API}/{doc}/analyses", headers=headers, json={"kind": "summary", "models": ["m"]})
    assert resp.status_code == 202, resp.text
    url = resp.json()["links"]["self"]
    analysis_id = resp.json()["id"]
    # Running and waiting on the model (the silent llm): no more events until the cancel.
    await eventually(
        lambda: client.get(url, headers=headers),
        lambda r: r.json()["stage"] == "models",
        what="the analysis waiting on its model",
        timeout=30,
    )
    with event_reads() as reads:
        streams = [asyncio.create_task(client.get(url + "/events", headers=headers)) for _ in range(watchers)]
        await eventually(lambda: _async(streams_of(analysis_id)), lambda n: n == watchers, what="every stream on")
        assert (await client.post(url + "/cancel", headers=headers)).status_code == 200
        bodies = [r.text for r in await asyncio.wait_for(asyncio.gather(*streams), 30)]
    assert len(set(bodies)) == 1, "every stream has the same events"
    assert bodies[0].count("event: ") >= 3 and bodies[0].rstrip().endswith('data: {"status":"cancelled"}'), bodies[0]
    assert streams_of(analysis_id) == 0
    return len(reads)


async def _async(value: int) -> int:
    return value


async def test_the_database_is_read_per_analysis_not_per_watcher(
    tmp_dir: Path, issuer: TokenIssuer, shared_db: str | None, silent_url: str
) -> None:
    url = silent_url
    # No fallback read within the test (in process, news comes from the analyst directly).
    async with documents_app(
        tmp_dir,
        issuer,
        shared_db,
        auth_url=url,
        llm_url=url,
        sse_poll_seconds=10,
        analysis_budget_check_seconds=0.2,
    ) as client:
        h = issuer.headers(new_user_id())
        resp = await upload(client, h, b"a document watched by many", "w.txt")
        assert resp.status_code == 201, resp.text
        doc = resp.json()["id"]
        one = await _watched_until_cancelled(client, h, doc, 1)
        many = await _watched_until_cancelled(client, h, doc, 20)
    # Read once when the first stream came, once per notification after: as many for 20 watchers
    # as for one (a notification may land during a read and cause one more).
    assert 1 <= one <= 3, one
    assert many <= one + 2, (one, many)
