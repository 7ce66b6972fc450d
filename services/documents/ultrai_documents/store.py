"""Reading and writing documents: one transaction per upload, parts of the original streamed in."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

from sqlalchemy import and_, delete, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.errors import ProblemError
from ultrai_documents.models import (
    BLOB_PART_BYTES,
    Analysis,
    AnalysisEvent,
    Chunk,
    Document,
    DocumentBlob,
    DocumentText,
)
from ultrai_documents.upload import Upload
from ultrai_documents.worker import ExtractionResult


def new_id() -> str:
    return secrets.token_hex(16)


async def owned(session: AsyncSession, owner_id: str, document_id: str) -> Document:
    """The document if this user owns it; 404 otherwise (another user's document does not exist)."""
    if len(document_id) != 32:
        raise ProblemError(404, "No such document.")
    doc = await session.scalar(select(Document).where(Document.id == document_id, Document.owner_id == owner_id))
    if doc is None:
        raise ProblemError(404, "No such document.")
    return doc


async def usage(session: AsyncSession, owner_id: str) -> tuple[int, int]:
    row = (
        await session.execute(
            select(func.count(Document.id), func.coalesce(func.sum(Document.size_bytes), 0)).where(
                Document.owner_id == owner_id
            )
        )
    ).one()
    return int(row[0]), int(row[1])


async def find_duplicate(session: AsyncSession, owner_id: str, sha256: str) -> Document | None:
    return await session.scalar(select(Document).where(Document.owner_id == owner_id, Document.sha256 == sha256))


async def save(
    sessions: async_sessionmaker[AsyncSession],
    owner_id: str,
    name: str,
    upload: Upload,
    result: ExtractionResult,
) -> tuple[Document, bool]:
    """Store metadata, original, text and chunks in one transaction. Returns (document, created)."""
    text = await asyncio.to_thread(Path(result.text_path).read_text, "utf-8")
    doc = Document(
        id=new_id(),
        owner_id=owner_id,
        name=name,
        kind=result.kind,
        media_type=result.media_type,
        size_bytes=upload.size,
        sha256=upload.sha256,
        page_count=result.page_count,
        encoding=result.encoding,
        char_count=len(text),
        token_count=sum(c[2] for c in result.chunks) if len(result.chunks) <= 1 else _distinct_tokens(result),
        chunk_count=len(result.chunks),
    )
    async with sessions() as session:
        try:
            session.add(doc)
            await session.flush()
            with open(upload.path, "rb") as fh:  # noqa: ASYNC230 (reads are done in a thread below)
                seq = 0
                while True:
                    data = await asyncio.to_thread(fh.read, BLOB_PART_BYTES)
                    if not data:
                        break
                    await session.execute(insert(DocumentBlob).values(document_id=doc.id, seq=seq, data=data))
                    seq += 1
            await session.execute(insert(DocumentText).values(document_id=doc.id, text=text))
            # In batches, so only a batch of chunk texts is held beside the text at a time.
            for offset in range(0, len(result.chunks), 200):
                rows = [
                    {
                        "document_id": doc.id,
                        "seq": offset + i,
                        "start_char": start,
                        "end_char": end,
                        "token_count": tokens,
                        "text": text[start:end],
                    }
                    for i, (start, end, tokens) in enumerate(result.chunks[offset : offset + 200])
                ]
                await session.execute(insert(Chunk), rows)
            await session.commit()
        except IntegrityError:
            # The same bytes arrived twice at once for this user: the first one stored wins.
            await session.rollback()
            existing = await find_duplicate(session, owner_id, upload.sha256)
            if existing is None:
                raise
            return existing, False
    return doc, True


def _distinct_tokens(result: ExtractionResult) -> int:
    """Tokens of the whole text: chunk tokens minus what overlaps repeat (approximately)."""
    total = 0
    last_end = 0
    for start, end, tokens in result.chunks:
        if start < last_end and end > start:
            total += round(tokens * (end - last_end) / (end - start))
        else:
            total += tokens
        last_end = max(last_end, end)
    return total


def encode_cursor(doc: Document) -> str:
    raw = f"{doc.created_at.isoformat()}|{doc.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, doc_id = raw.split("|", 1)
        return datetime.fromisoformat(stamp), doc_id
    except (ValueError, UnicodeDecodeError):
        raise ProblemError(400, "The cursor is not valid; start again from the first page.") from None


async def list_page(
    session: AsyncSession, owner_id: str, limit: int, cursor: str | None
) -> tuple[list[Document], str | None]:
    query = select(Document).where(Document.owner_id == owner_id)
    if cursor:
        stamp, doc_id = decode_cursor(cursor)
        query = query.where(or_(Document.created_at < stamp, and_(Document.created_at == stamp, Document.id < doc_id)))
    rows = list(
        (await session.scalars(query.order_by(Document.created_at.desc(), Document.id.desc()).limit(limit + 1))).all()
    )
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def stream_original(sessions: async_sessionmaker[AsyncSession], document_id: str) -> AsyncIterator[bytes]:
    """The original bytes, one stored part at a time (each part read in its own short session)."""
    seq = 0
    while True:
        async with sessions() as session:
            data = await session.scalar(
                select(DocumentBlob.data).where(DocumentBlob.document_id == document_id, DocumentBlob.seq == seq)
            )
        if data is None:
            return
        yield bytes(data)
        seq += 1


async def delete_document(session: AsyncSession, document_id: str) -> None:
    analyses = select(Analysis.id).where(Analysis.document_id == document_id)
    await session.execute(delete(AnalysisEvent).where(AnalysisEvent.analysis_id.in_(analyses)))
    await session.execute(delete(Analysis).where(Analysis.document_id == document_id))
    await session.execute(delete(Chunk).where(Chunk.document_id == document_id))
    await session.execute(delete(DocumentText).where(DocumentText.document_id == document_id))
    await session.execute(delete(DocumentBlob).where(DocumentBlob.document_id == document_id))
    await session.execute(delete(Document).where(Document.id == document_id))
    await session.commit()
