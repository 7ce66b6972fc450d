"""What the documents service erases of a deleted account: every row of its documents and analyses,
and nothing of anyone else's."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from shared.db import Database
from shared.kv import KeyValue
from shared.tokens import RevocationStore
from tests.documents.conftest import count_rows, documents_app, new_user_id, running_analysis, settings_for, upload
from tests.support.tokens import TokenIssuer
from ultrai_documents.main import owners_eraser
from ultrai_documents.models import (
    Analysis,
    AnalysisEvent,
    AnalysisTicket,
    Chunk,
    Document,
    DocumentBlob,
    DocumentText,
    utcnow,
)


async def held(db: Database, owner: str) -> dict[str, int]:
    """The rows of each table that belong to ``owner``."""
    documents = select(Document.id).where(Document.owner_id == owner)
    analyses = select(Analysis.id).where(Analysis.owner_id == owner)
    queries = {
        "documents": select(func.count()).where(Document.owner_id == owner),
        "blobs": select(func.count()).where(DocumentBlob.document_id.in_(documents)),
        "texts": select(func.count()).where(DocumentText.document_id.in_(documents)),
        "chunks": select(func.count()).where(Chunk.document_id.in_(documents)),
        "analyses": select(func.count()).where(Analysis.owner_id == owner),
        "events": select(func.count()).where(AnalysisEvent.analysis_id.in_(analyses)),
        "tickets": select(func.count()).where(AnalysisTicket.owner_id == owner),
    }
    async with db.sessions() as session:
        return {name: int(await session.scalar(query) or 0) for name, query in queries.items()}


async def test_erasing_an_owner_leaves_nothing_of_theirs_and_all_of_the_others(
    tmp_dir: Path, issuer: TokenIssuer, fresh_db: str | None
) -> None:
    gone, kept = new_user_id(), new_user_id()
    docs = {}
    async with documents_app(tmp_dir, issuer, fresh_db) as client:
        for owner in (gone, kept):
            for n in range(2):
                text = f"{owner}'s document {n}: " + "words to chunk " * 400
                resp = await upload(client, issuer.headers(owner), text.encode(), f"{n}.txt", "text/plain")
                assert resp.status_code == 201, resp.text
                docs.setdefault(owner, []).append(resp.json()["id"])
    db = Database(settings_for(tmp_dir, database_url=fresh_db), "documents")
    try:
        async with db.sessions() as session:
            for owner, letter in ((gone, "a"), (kept, "b")):
                analysis_id = letter * 32
                session.add(running_analysis(analysis_id, docs[owner][0], owner, heartbeat_at=utcnow()))
                await session.flush()
                session.add(AnalysisEvent(analysis_id=analysis_id, event="running", data={"status": "running"}))
                ticket = hashlib.sha256(analysis_id.encode()).hexdigest()
                expires = utcnow() + timedelta(minutes=5)
                session.add(
                    AnalysisTicket(ticket_hash=ticket, analysis_id=analysis_id, owner_id=owner, expires_at=expires)
                )
            await session.commit()
        before = await held(db, kept)
        assert all(before.values()), before  # every table holds something of each owner
        assert await held(db, gone) == before

        erase = owners_eraser(db)
        await erase([gone])
        assert set((await held(db, gone)).values()) == {0}
        assert await held(db, kept) == before
        await erase([gone])  # listed again (a report that did not arrive): nothing left to find
        assert await held(db, kept) == before
    finally:
        await db.dispose()


async def test_an_upload_whose_account_is_deleted_meanwhile_stores_nothing(
    tmp_dir: Path, issuer: TokenIssuer, fresh_db: str | None
) -> None:
    """The account goes (its tokens revoked, its data perhaps erased already) while its upload is
    on the way: the upload is refused with the 401 a new request would get, and nothing is stored.
    Before, it was stored after the erasure and kept for good."""
    owner = new_user_id()
    revocations = RevocationStore(KeyValue(None, service="revoked"))
    boundary = "erasure-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="late.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()

    async def body() -> AsyncIterator[bytes]:
        yield head + b"the first half of a document, "
        await revocations.revoke("user", owner, ttl=600)  # DELETE /api/v1/auth/me, meanwhile
        yield b"and its second half\r\n" + f"--{boundary}--\r\n".encode()

    async with documents_app(tmp_dir, issuer, fresh_db, revocations=revocations) as client:
        headers = {**issuer.headers(owner), "Content-Type": f"multipart/form-data; boundary={boundary}"}
        resp = await client.post("/api/v1/documents", headers=headers, content=body())
        assert resp.status_code == 401, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json")
        # And the same upload from an account that stays is stored as before.
        kept = new_user_id()
        stored = await upload(client, issuer.headers(kept), b"a document that stays", "kept.txt", "text/plain")
        assert stored.status_code == 201, stored.text
    assert await count_rows(tmp_dir, fresh_db, "documents") == 1
    assert await count_rows(tmp_dir, fresh_db, "document_text_parts") == 1
