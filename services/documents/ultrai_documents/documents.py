"""A user's documents: the quota, an upload from its bytes to its stored text and chunks, reading
them back (one page, the chunks, the text, the original) and deleting them."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.errors import ProblemError
from shared.tokens import Recheck
from ultrai_documents.extraction.base import ExtractionError
from ultrai_documents.extraction.sandbox import Extractor
from ultrai_documents.models import Chunk, Document
from ultrai_documents.repository import DocumentsRepository
from ultrai_documents.settings import DocumentsSettings
from ultrai_documents.store import QuotaExceeded, save, stream_original, stream_text
from ultrai_documents.upload import Upload, clean_filename, receive_upload


async def owned_document(repository: DocumentsRepository, owner_id: str, document_id: str) -> Document:
    """The document if this user owns it; 404 otherwise (another user's document does not exist)."""
    if len(document_id) != 32:
        raise ProblemError(404, "No such document.")
    doc = await repository.owned_document(owner_id, document_id)
    if doc is None:
        raise ProblemError(404, "No such document.")
    return doc


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


@dataclass(eq=False)
class DocumentService:
    """Works on the request's session (``repository``), released before anything slow; what is
    streamed after the response starts reads in short sessions of its own (``sessions``)."""

    repository: DocumentsRepository
    sessions: async_sessionmaker[AsyncSession]
    settings: DocumentsSettings
    extractor: Extractor

    def _quota_error(self, limit: str) -> ProblemError:
        if limit == "documents":
            return ProblemError(
                403, f"You have reached the limit of {self.settings.quota_max_documents} documents; delete some first."
            )
        return ProblemError(
            403, f"This file would take you past your storage limit of {self.settings.quota_max_bytes:,} bytes."
        )

    async def upload(
        self, owner: str, content_type: str, body: AsyncIterator[bytes], recheck: Recheck | None = None
    ) -> tuple[Document, bool]:
        """Receive, check, extract and store an upload. Returns (document, created): the same
        bytes uploaded before by this user give that document, not a new one. ``recheck`` runs
        before the document is committed (the uploader's token still unrevoked: an account deleted
        while its upload was on the way may have been erased already).

        The quota is looked at before the body is read and before extraction, to turn away early
        what is over it already; what holds is the check made as the document is stored."""
        settings = self.settings
        count, used = await self.repository.usage(owner)
        await self.repository.release()
        if count >= settings.quota_max_documents:
            raise self._quota_error("documents")
        received = await receive_upload(
            content_type,
            body,
            settings.upload_folder,
            max_bytes=settings.max_upload_bytes,
            max_parts=settings.max_multipart_parts,
            max_field_bytes=settings.max_field_bytes,
        )
        try:
            return await self._store(owner, received, used, recheck)
        finally:
            await asyncio.to_thread(received.path.unlink, True)
            await asyncio.to_thread(received.path.with_suffix(".txt").unlink, True)

    async def _store(self, owner: str, received: Upload, used: int, recheck: Recheck | None) -> tuple[Document, bool]:
        name = clean_filename(received.filename, self.settings.max_filename_chars)
        existing = await self.repository.document_with_sha256(owner, received.sha256)
        await self.repository.release()
        if existing is not None:
            return existing, False
        if used + received.size > self.settings.quota_max_bytes:
            raise self._quota_error("bytes")
        try:
            result = await self.extractor.extract(received.path, received.filename)
        except ExtractionError as exc:
            raise ProblemError(exc.status, exc.reason) from None
        try:
            return await save(
                self.repository,
                owner,
                name,
                received,
                result,
                max_documents=self.settings.quota_max_documents,
                max_bytes=self.settings.quota_max_bytes,
                before_commit=recheck,
            )
        except QuotaExceeded as exc:
            raise self._quota_error(exc.limit) from None

    async def page(self, owner: str, limit: int, cursor: str | None) -> tuple[list[Document], str | None]:
        """Up to ``limit`` documents, newest first, after ``cursor``; and the next page's cursor."""
        after = decode_cursor(cursor) if cursor else None
        rows = await self.repository.documents_page(owner, limit + 1, after)
        next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
        return rows[:limit], next_cursor

    async def get(self, owner: str, document_id: str) -> Document:
        return await owned_document(self.repository, owner, document_id)

    async def chunks(self, owner: str, document_id: str, offset: int, limit: int) -> list[Chunk]:
        await owned_document(self.repository, owner, document_id)
        return await self.repository.chunks(document_id, offset, limit)

    async def text(self, owner: str, document_id: str) -> AsyncIterator[bytes]:
        """The extracted text as UTF-8, streamed a stored part at a time."""
        await owned_document(self.repository, owner, document_id)
        await self.repository.release()
        return stream_text(self.sessions, document_id)

    async def original(self, owner: str, document_id: str) -> tuple[Document, AsyncIterator[bytes]]:
        """The document and its original bytes, streamed a stored part at a time."""
        doc = await owned_document(self.repository, owner, document_id)
        await self.repository.release()
        return doc, stream_original(self.sessions, doc.id)

    async def delete(self, owner: str, document_id: str) -> None:
        """The document with its chunks, analyses and their events."""
        doc = await owned_document(self.repository, owner, document_id)
        await self.repository.delete_document(doc.id)
        await self.repository.commit()
