"""A document's stored parts: written in one transaction per upload, read back one part at a time.

The original and the text are read from the sandbox's files a part at a time and the chunks in
batches, so a 25 MB document never sits in memory whole (or twice); serving them holds one part.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.tokens import Recheck
from ultrai_documents.extraction.sandbox import ExtractionResult
from ultrai_documents.models import BLOB_PART_BYTES, TEXT_PART_CHARS, Document, new_id
from ultrai_documents.repository import DocumentsRepository
from ultrai_documents.upload import Upload

Part = TypeVar("Part", bytes, str)
CHUNK_BATCH = 200


class QuotaExceeded(Exception):
    """The upload would take its owner past a limit: ``limit`` is ``"documents"`` or ``"bytes"``."""

    def __init__(self, limit: str) -> None:
        super().__init__(limit)
        self.limit = limit


async def save(
    repository: DocumentsRepository,
    owner_id: str,
    name: str,
    upload: Upload,
    result: ExtractionResult,
    *,
    max_documents: int,
    max_bytes: int,
    before_commit: Recheck | None = None,
) -> tuple[Document, bool]:
    """Store metadata, original, text and chunks in one transaction. Returns (document, created).
    Raises QuotaExceeded, having stored nothing, when the document would take its owner past
    ``max_documents`` documents or ``max_bytes`` stored; the check and the insert are one step,
    whatever else the owner uploads at the same time. ``before_commit`` runs last, before the
    commit: when it raises (the uploader's token revoked meanwhile), nothing is stored."""
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
    text_path = Path(result.text_path)
    try:
        exceeded = await repository.add_document_within(doc, max_documents, max_bytes)
        if exceeded is not None:
            raise QuotaExceeded(exceeded)
        async for seq, data in _file_parts(upload.path, BLOB_PART_BYTES, _read_bytes):
            await repository.add_original_part(doc.id, seq, data)
        async for seq, text in _file_parts(text_path, TEXT_PART_CHARS, _read_text):
            await repository.add_text_part(doc.id, seq, text)
        async for rows in _chunk_rows(doc.id, text_path, result.chunks):
            await repository.add_chunks(rows)
        if before_commit is not None:
            try:
                await before_commit()
            except BaseException:
                await repository.rollback()
                raise
        await repository.commit()
    except IntegrityError:
        # The same bytes arrived twice at once for this user: the first one stored wins.
        await repository.rollback()
        existing = await repository.document_with_sha256(owner_id, upload.sha256)
        if existing is None:
            raise
        return existing, False
    return doc, True


def _read_bytes(path: Path) -> IO[bytes]:
    return open(path, "rb")


def _read_text(path: Path) -> IO[str]:
    return open(path, encoding="utf-8", newline="")


async def _file_parts(
    path: Path, size: int, opener: Callable[[Path], IO[Part]]
) -> AsyncGenerator[tuple[int, Part], None]:
    """A file in parts of ``size`` bytes or characters (as ``opener`` opens it), each read in a thread."""
    fh = await asyncio.to_thread(opener, path)
    try:
        seq = 0
        while data := await asyncio.to_thread(fh.read, size):
            yield seq, data
            seq += 1
    finally:
        await asyncio.to_thread(fh.close)


async def _chunk_rows(
    document_id: str, text_path: Path, chunks: list[tuple[int, int, int]], batch: int = CHUNK_BATCH
) -> AsyncIterator[list[dict[str, Any]]]:
    """Chunk rows in batches, slicing the text file through a window that only moves forward
    (chunks are in order; they overlap only their neighbours)."""
    window, window_start = "", 0
    parts = _file_parts(text_path, TEXT_PART_CHARS, _read_text)
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


async def _stored_parts(
    sessions: async_sessionmaker[AsyncSession],
    read: Callable[[DocumentsRepository, int], Awaitable[Part | None]],
) -> AsyncIterator[Part]:
    """A document's stored parts in order, each read in its own short session (a slow reader holds
    no connection between parts)."""
    seq = 0
    while True:
        async with sessions() as session:
            part = await read(DocumentsRepository(session), seq)
        if part is None:
            return
        yield part
        seq += 1


async def stream_original(sessions: async_sessionmaker[AsyncSession], document_id: str) -> AsyncIterator[bytes]:
    """The original bytes, one stored part at a time."""

    async def read(repository: DocumentsRepository, seq: int) -> bytes | None:
        return await repository.original_part(document_id, seq)

    async for data in _stored_parts(sessions, read):
        yield bytes(data)


async def stream_text(sessions: async_sessionmaker[AsyncSession], document_id: str) -> AsyncIterator[bytes]:
    """The extracted text as UTF-8, one stored part at a time."""

    async def read(repository: DocumentsRepository, seq: int) -> str | None:
        return await repository.text_part(document_id, seq)

    async for text in _stored_parts(sessions, read):
        yield text.encode("utf-8")
