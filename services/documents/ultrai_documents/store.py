"""Reading and writing documents: one transaction per upload, parts of the original streamed in."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.errors import ProblemError
from ultrai_documents.extraction.sandbox import ExtractionResult
from ultrai_documents.models import (
    BLOB_PART_BYTES,
    TEXT_PART_CHARS,
    Analysis,
    AnalysisEvent,
    Chunk,
    Document,
    DocumentBlob,
    DocumentText,
)
from ultrai_documents.upload import Upload


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
    """Store metadata, original, text and chunks in one transaction. Returns (document, created).

    The original and the text are read from the worker's files a part at a time and the chunks in
    batches, so a 25 MB document never sits in memory whole (or twice).
    """
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
        char_count=result.chars,
        token_count=_distinct_tokens(result),
        chunk_count=len(result.chunks),
    )
    async with sessions() as session:
        try:
            session.add(doc)
            await session.flush()
            async for seq, data in _parts(upload.path, "rb", BLOB_PART_BYTES):
                await session.execute(insert(DocumentBlob).values(document_id=doc.id, seq=seq, data=data))
            async for seq, text in _parts(Path(result.text_path), "r", TEXT_PART_CHARS):
                await session.execute(insert(DocumentText).values(document_id=doc.id, seq=seq, text=text))
            async for rows in _chunk_rows(doc.id, Path(result.text_path), result.chunks):
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


async def _parts(path: Path, mode: str, size: int) -> AsyncIterator[tuple[int, Any]]:
    """A file in parts of ``size`` bytes ("rb") or characters ("r", UTF-8), each read in a thread."""
    kwargs = {"encoding": "utf-8", "newline": ""} if mode == "r" else {}
    fh = await asyncio.to_thread(open, path, mode, **kwargs)
    try:
        seq = 0
        while data := await asyncio.to_thread(fh.read, size):
            yield seq, data
            seq += 1
    finally:
        await asyncio.to_thread(fh.close)


async def _chunk_rows(
    document_id: str, text_path: Path, chunks: list[tuple[int, int, int]], batch: int = 200
) -> AsyncIterator[list[dict[str, Any]]]:
    """Chunk rows in batches, slicing the text file through a window that only moves forward
    (chunks are in order; they overlap only their neighbours)."""
    window, window_start = "", 0
    parts = _parts(text_path, "r", TEXT_PART_CHARS)
    rows: list[dict[str, Any]] = []
    for seq, (start, end, tokens) in enumerate(chunks):
        while window_start + len(window) < end:
            _, more = await anext(parts)
            window += more
        if start > window_start:
            window = window[start - window_start :]
            window_start = start
        rows.append(
            {
                "document_id": document_id,
                "seq": seq,
                "start_char": start,
                "end_char": end,
                "token_count": tokens,
                "text": window[start - window_start : end - window_start],
            }
        )
        if len(rows) >= batch:
            yield rows
            rows = []
    if rows:
        yield rows
    await parts.aclose()


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


async def _stream_parts(
    sessions: async_sessionmaker[AsyncSession], table: type[DocumentBlob] | type[DocumentText], document_id: str
) -> AsyncIterator[Any]:
    """A document's stored parts in order, each read in its own short session (a slow reader holds
    no connection between parts)."""
    column = table.data if table is DocumentBlob else table.text
    seq = 0
    while True:
        async with sessions() as session:
            part = await session.scalar(select(column).where(table.document_id == document_id, table.seq == seq))
        if part is None:
            return
        yield part
        seq += 1


async def stream_original(sessions: async_sessionmaker[AsyncSession], document_id: str) -> AsyncIterator[bytes]:
    """The original bytes, one stored part at a time."""
    async for data in _stream_parts(sessions, DocumentBlob, document_id):
        yield bytes(data)


async def stream_text(sessions: async_sessionmaker[AsyncSession], document_id: str) -> AsyncIterator[bytes]:
    """The extracted text as UTF-8, one stored part at a time."""
    async for text in _stream_parts(sessions, DocumentText, document_id):
        yield text.encode("utf-8")


async def full_text(session: AsyncSession, document_id: str) -> str:
    parts = await session.scalars(
        select(DocumentText.text).where(DocumentText.document_id == document_id).order_by(DocumentText.seq)
    )
    return "".join(parts)


async def delete_document(session: AsyncSession, document_id: str) -> None:
    analyses = select(Analysis.id).where(Analysis.document_id == document_id)
    await session.execute(delete(AnalysisEvent).where(AnalysisEvent.analysis_id.in_(analyses)))
    await session.execute(delete(Analysis).where(Analysis.document_id == document_id))
    await session.execute(delete(Chunk).where(Chunk.document_id == document_id))
    await session.execute(delete(DocumentText).where(DocumentText.document_id == document_id))
    await session.execute(delete(DocumentBlob).where(DocumentBlob.document_id == document_id))
    await session.execute(delete(Document).where(Document.id == document_id))
    await session.commit()
