"""The per-user limits hold under concurrent requests: twenty uploads or analysis starts at once
(on SQLite and, when TEST_DATABASE_URL is set, PostgreSQL) never take a user past the number of
documents, the bytes stored or the analyses queued or running at a time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.documents.conftest import count_rows, documents_app, new_user_id, upload
from tests.support.tokens import TokenIssuer

API = "/api/v1/documents"
AT_ONCE = 20


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, pg_databases) -> str | None:
    """None (SQLite in the test's folder) or a PostgreSQL database of the test's own."""
    if request.param == "sqlite":
        return None
    if pg_databases is None:
        pytest.skip("TEST_DATABASE_URL is not set")
    return str(await pg_databases.create("limits"))


async def _uploads(client: httpx.AsyncClient, headers: dict[str, str], size: int) -> list[httpx.Response]:
    bodies = [f"document {i:02d} ".encode().ljust(size, b"x") for i in range(AT_ONCE)]
    return await asyncio.gather(*(upload(client, headers, body, f"{i}.txt") for i, body in enumerate(bodies)))


async def test_concurrent_uploads_stay_within_the_document_count(
    tmp_dir: Path, issuer: TokenIssuer, database: str | None
) -> None:
    async with documents_app(tmp_dir, issuer, database, quota_max_documents=3) as client:
        answers = await _uploads(client, issuer.headers(new_user_id()), 40)
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] * 3 + [403] * (AT_ONCE - 3), codes
    assert all("limit of 3 documents" in r.json()["detail"] for r in answers if r.status_code == 403)
    assert await count_rows(tmp_dir, database, "documents") == 3


async def test_concurrent_uploads_stay_within_the_storage_quota(
    tmp_dir: Path, issuer: TokenIssuer, database: str | None
) -> None:
    # Room for four 100-byte files.
    async with documents_app(tmp_dir, issuer, database, quota_max_bytes=450) as client:
        answers = await _uploads(client, issuer.headers(new_user_id()), 100)
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] * 4 + [403] * (AT_ONCE - 4), codes
    assert all("storage limit" in r.json()["detail"] for r in answers if r.status_code == 403)
    assert await count_rows(tmp_dir, database, "documents") == 4


async def test_concurrent_analysis_starts_stay_within_the_active_limit(
    tmp_dir: Path, issuer: TokenIssuer, database: str | None, silent_url: str
) -> None:
    limit = 3
    async with documents_app(
        tmp_dir,
        issuer,
        database,
        auth_url=silent_url,
        llm_url=silent_url,
        analysis_max_active_per_user=limit,
        analysis_budget_check_seconds=0.2,  # the start's wait for the silent llm's estimate
    ) as client:
        h = issuer.headers(new_user_id())
        doc = await upload(client, h, b"a document to analyse at once", "a.txt")
        assert doc.status_code == 201, doc.text
        url = f"{API}/{doc.json()['id']}/analyses"
        # Twenty different questions: none is the same analysis as another.
        bodies = [{"kind": "qa", "question": f"question {i}?", "models": ["m"]} for i in range(AT_ONCE)]
        answers = await asyncio.gather(*(client.post(url, headers=h, json=body) for body in bodies))
        codes = sorted(r.status_code for r in answers)
        assert codes == [202] * limit + [429] * (AT_ONCE - limit), codes
        assert all(r.headers["retry-after"] for r in answers if r.status_code == 429)
        assert await count_rows(tmp_dir, database, "analyses") == limit
