"""Erasing deleted accounts: how fast the documents service catches up after many deletions, and what
a sweep costs when there is nothing to erase (what every documents and llm worker pays each
ERASURE_POLL_SECONDS).

Auth runs in this process (its app over an in-process transport, its own database); the accounts are
listed as its deletions list them (one ``account_erasures`` row per service). The documents
database holds DOCS documents per account, each with its text, blob and chunk rows, and an analysis
with two events; as many accounts again are kept and must keep every row. The sweep is the
service's own (``shared.erasure.ErasureSweeper`` with documents' ``owners_eraser``), 100 accounts a
batch. PostgreSQL when TEST_DATABASE_URL is set (one database per service, made and dropped here),
SQLite otherwise.

Usage: python bench/bench_erasure.py [accounts] [docs per account]
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "services" / "auth"), str(ROOT / "services" / "documents")]

from sqlalchemy import func, insert, select  # noqa: E402

from shared.db import Database  # noqa: E402
from shared.erasure import ErasureSweeper  # noqa: E402
from shared.migrations import upgrade  # noqa: E402
from tools.bench_results import Results  # noqa: E402
from ultrai_auth.main import build as build_auth  # noqa: E402
from ultrai_auth.models import AccountErasure  # noqa: E402
from ultrai_auth.settings import AuthSettings  # noqa: E402
from ultrai_documents.main import MIGRATIONS as DOCUMENTS_MIGRATIONS  # noqa: E402
from ultrai_documents.main import owners_eraser  # noqa: E402
from ultrai_documents.models import (  # noqa: E402
    AnalysisEvent,
    Chunk,
    Document,
    DocumentBlob,
    DocumentText,
    utcnow,
)
from ultrai_documents.settings import DocumentsSettings  # noqa: E402

ACCOUNTS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
DOCS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
PG = os.environ.get("TEST_DATABASE_URL")
IDLE_SWEEPS = 200


async def pg_database(label: str) -> str:
    import asyncpg

    name = f"bench_{label}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(PG)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return PG.rsplit("/", 1)[0] + "/" + name  # type: ignore[union-attr]


async def drop_pg(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()


def document_rows(owner: str, n: int) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {"documents": [], "texts": [], "blobs": [], "chunks": [], "analyses": []}
    for i in range(n):
        doc = uuid.uuid4().hex
        rows["documents"].append(
            {
                "id": doc,
                "owner_id": owner,
                "name": f"{i}.txt",
                "kind": "text",
                "media_type": "text/plain",
                "size_bytes": 2000,
                "sha256": secrets.token_hex(32),
                "char_count": 2000,
                "token_count": 400,
                "chunk_count": 2,
                "created_at": utcnow(),
            }
        )
        rows["texts"].append({"document_id": doc, "seq": 0, "text": "words " * 330})
        rows["blobs"].append({"document_id": doc, "seq": 0, "data": b"words " * 330})
        rows["chunks"] += [
            {
                "document_id": doc,
                "seq": s,
                "text": "words " * 165,
                "token_count": 200,
                "start_char": 990 * s,
                "end_char": 990 * (s + 1),
            }
            for s in (0, 1)
        ]
        rows["analyses"].append({"document_id": doc, "owner_id": owner})
    return rows


async def fill_documents(db: Database, owners: list[str]) -> None:
    from tests.documents.conftest import running_analysis

    async with db.sessions() as session:
        for start in range(0, len(owners), 200):
            batch: dict[str, list[dict[str, Any]]] = {}
            analyses = []
            for owner in owners[start : start + 200]:
                for name, rows in document_rows(owner, DOCS).items():
                    batch.setdefault(name, []).extend(rows)
            for name, model in (("documents", Document), ("texts", DocumentText), ("blobs", DocumentBlob)):
                await session.execute(insert(model), batch[name])
            await session.execute(insert(Chunk), batch["chunks"])
            for a in batch["analyses"]:
                analysis = running_analysis(uuid.uuid4().hex, a["document_id"], a["owner_id"], heartbeat_at=utcnow())
                analysis.status = "completed"
                analyses.append(analysis)
            session.add_all(analyses)
            await session.flush()
            events = [{"analysis_id": x.id, "event": e, "data": {}} for x in analyses for e in ("running", "completed")]
            await session.execute(insert(AnalysisEvent), events)
            await session.commit()


async def count_documents(db: Database, owners: list[str]) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).where(Document.owner_id.in_(owners))) or 0)


async def bench(tmp: Path, results: Results) -> None:
    auth_url = await pg_database("auth") if PG else None
    docs_url = await pg_database("documents") if PG else None
    try:
        auth_settings = AuthSettings(
            environment="test", data_dir=tmp, database_url=auth_url, log_level="WARNING", argon2_memory_kib=64
        )
        docs_settings = DocumentsSettings(
            environment="test", data_dir=tmp, database_url=docs_url, log_level="WARNING", erasure_poll_seconds=0
        )
        await asyncio.to_thread(upgrade, DOCUMENTS_MIGRATIONS, docs_settings, "documents")
        documents = Database(docs_settings, "documents")
        gone = [str(uuid.uuid4()) for _ in range(ACCOUNTS)]
        kept = [str(uuid.uuid4()) for _ in range(ACCOUNTS)]
        t = time.perf_counter()
        await fill_documents(documents, gone + kept)
        print(f"{2 * ACCOUNTS} accounts x {DOCS} documents written in {time.perf_counter() - t:.1f} s")

        app = build_auth(auth_settings)
        async with app.router.lifespan_context(app):
            auth_db: Database = app.state.db
            async with auth_db.sessions() as session:
                now = time.time()
                rows = [
                    {"user_id": u, "service": "documents", "deleted_at": now, "due_at": now + i * 1e-6}
                    for i, u in enumerate(gone)
                ]
                await session.execute(insert(AccountErasure), rows)
                await session.commit()

            batches: list[float] = []
            erase = owners_eraser(documents)

            async def timed_erase(user_ids: list[str]) -> None:
                start = time.perf_counter()
                await erase(user_ids)
                batches.append((time.perf_counter() - start) * 1000)

            transport = httpx.ASGITransport(app=app)
            sweeper = ErasureSweeper(docs_settings, "documents", timed_erase, transport=transport)
            try:
                start = time.perf_counter()
                erased = await sweeper.sweep()
                took = time.perf_counter() - start
                assert erased == ACCOUNTS, erased
                assert await count_documents(documents, gone) == 0
                assert await count_documents(documents, kept) == ACCOUNTS * DOCS
                idle = []
                for _ in range(IDLE_SWEEPS):
                    start = time.perf_counter()
                    assert await sweeper.sweep() == 0
                    idle.append((time.perf_counter() - start) * 1000)
            finally:
                await sweeper.aclose()
        await documents.dispose()
    finally:
        for url in (auth_url, docs_url):
            if url:
                await drop_pg(url)

    where = "PostgreSQL" if PG else "SQLite"
    batch_ms = statistics.median(batches)
    print(f"erasing {ACCOUNTS} deleted accounts ({DOCS} documents each, {where}), 100 a batch:")
    print(f"  {took:.2f} s in all: {ACCOUNTS / took:.0f} accounts/s; the erase of one batch median {batch_ms:.1f} ms")
    print(f"  the erase's share of the sweep: {sum(batches) / 1000 / took:.2f} (the rest: listing and reports)")
    print(f"  a sweep with nothing to erase: median {statistics.median(idle):.2f} ms ({IDLE_SWEEPS} sweeps)")
    results.add("accounts erased per second", ACCOUNTS / took, "accounts/s", better="higher")
    results.add("erase of 100 accounts median", batch_ms, "ms", better="lower")
    results.add("idle sweep median", statistics.median(idle), "ms", better="lower")


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-erasure-"))
    try:
        results = Results("erasure_pg" if PG else "erasure")
        asyncio.run(bench(tmp, results))
        results.save()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
