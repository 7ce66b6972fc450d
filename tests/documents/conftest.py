"""Helpers for the documents suite: the app in process with tokens from a key of the test's own
(tests.support.tokens, published to the app's verifier as a JWKS, the way the auth service
publishes its keys), and
real PDF, DOCX and hostile files built in the tests."""

from __future__ import annotations

import io
import secrets
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.kv import KeyValue
from shared.tokens import RevocationStore, TokenVerifier
from tests.asgi import asgi_client
from tests.support.servers import silent_server
from tests.support.tokens import TokenIssuer
from ultrai_documents.analysis.service import params_hash
from ultrai_documents.main import build
from ultrai_documents.models import Analysis
from ultrai_documents.settings import DocumentsSettings


@pytest.fixture(scope="session")
def issuer() -> TokenIssuer:
    return TokenIssuer()


def settings_for(tmp: Path, **overrides: Any) -> DocumentsSettings:
    values: dict[str, Any] = {
        "environment": "test",
        "data_dir": tmp,
        "database_url": None,
        "redis_url": None,
        # No llm service in process: analyses are tested end to end on the stack.
        "llm_url": "http://127.0.0.1:9",
        "auth_url": "http://127.0.0.1:9",
        "log_level": "WARNING",
    }
    values.update(overrides)
    return DocumentsSettings(**values)


@asynccontextmanager
async def documents_app(
    tmp: Path,
    issuer: TokenIssuer,
    database_url: str | None = None,
    revocations: RevocationStore | None = None,
    **overrides: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process; ``revocations`` is the store its verifier reads (a test revokes in it)."""
    settings = settings_for(tmp, database_url=database_url, **overrides)
    verifier = TokenVerifier(
        settings,
        "documents",
        jwks_source=issuer.jwks,
        revocations=revocations or RevocationStore(KeyValue(None, service="revoked")),
    )
    app = build(settings, verifier=verifier)
    async with asgi_client(app) as client:
        yield client
    await verifier.aclose()


@pytest.fixture(scope="session")
async def shared_db(pg_databases) -> str | None:
    """One PostgreSQL database for the in-process tests when TEST_DATABASE_URL is set (users are
    random, so tests do not see each other's documents); None means SQLite in the test's folder."""
    return await pg_databases.create("documents") if pg_databases is not None else None


@pytest.fixture
async def fresh_db(pg_databases) -> str | None:
    """A database of this test's own (for tests that count rows)."""
    return await pg_databases.create("documents") if pg_databases is not None else None


@pytest.fixture
async def client(tmp_dir: Path, issuer: TokenIssuer, shared_db: str | None) -> AsyncIterator[httpx.AsyncClient]:
    async with documents_app(tmp_dir, issuer, shared_db) as c:
        yield c


async def count_rows(tmp: Path, database_url: str | None, table: str) -> int:
    """Rows in one of the service's tables, read straight from its database."""
    if database_url is None:
        import sqlite3

        with sqlite3.connect(tmp / "documents.db") as conn:
            return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(f"SELECT COUNT(*) FROM documents.{table}")  # noqa: S608
    finally:
        await conn.close()


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A server that accepts connections and never answers: analyses sent to it stay running."""
    with silent_server() as address:
        yield f"http://{address}"


def running_analysis(
    analysis_id: str, document_id: str, owner_id: str, *, heartbeat_at: datetime, attempt: int = 1
) -> Analysis:
    """A qa analysis row left running (as a worker that stopped leaves it), for the queue's
    bookkeeping tests; its question is the id's first character."""
    params = {"kind": "qa", "question": analysis_id[0], "fields": None, "instruction": None}
    params |= {"models": ["m"], "synthesis_model": None}
    return Analysis(
        id=analysis_id,
        document_id=document_id,
        owner_id=owner_id,
        kind="qa",
        params=params,
        params_hash=params_hash(params),
        status="running",
        attempt=attempt,
        started_at=heartbeat_at,
        heartbeat_at=heartbeat_at,
    )


def new_user_id() -> str:
    """A user id no other test has: its documents are its own."""
    return "u" + secrets.token_hex(6)


# ------------------------------------------------------------------------------------ real files


def make_pdf(pages: list[str]) -> bytes:
    """A real PDF with one text line per page, written by pypdf (Helvetica, uncompressed content)."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    font_ref = writer._add_object(font)
    for text in pages:
        page = writer.add_blank_page(width=612, height=792)
        lines = text.split("\n")
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in lines:
            safe = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({safe}) Tj T*")
        ops.append("ET")
        stream = DecodedStreamObject()
        stream.set_data("\n".join(ops).encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font_ref})}
        )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_docx(paragraphs: list[str], table: list[list[str]] | None = None) -> bytes:
    import docx

    document = docx.Document()
    for p in paragraphs:
        document.add_paragraph(p)
    if table:
        t = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                t.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def rezip(docx_bytes: bytes, edit: Callable[[zipfile.ZipFile, zipfile.ZipFile], None]) -> bytes:
    """Copy a DOCX's parts into a new zip, letting ``edit`` add or replace parts."""
    src = zipfile.ZipFile(io.BytesIO(docx_bytes))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        edit(src, dst)
    return out.getvalue()


async def upload(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    data: bytes,
    name: str = "file.bin",
    content_type: str = "application/octet-stream",
) -> httpx.Response:
    return await client.post("/api/v1/documents", headers=headers, files={"file": (name, data, content_type)})
