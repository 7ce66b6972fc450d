"""Every query of the documents service, on one database session.

The callers decide where a transaction ends (``commit``) and when the connection goes back to the
pool before something slow (``release``), both from ``shared.db.Repository``; nothing here commits
on its own.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, func, insert, or_, select, text, update

from shared.db import Repository
from ultrai_documents.models import (
    Analysis,
    AnalysisEvent,
    AnalysisTicket,
    Chunk,
    Document,
    DocumentBlob,
    DocumentText,
)

ACTIVE = ("queued", "running")


class DocumentsRepository(Repository):
    # ---- per-user limits ---------------------------------------------------------------------
    # A limit is checked after the row that counts against it is written, in the same transaction,
    # while the owner's lock is held: two requests of one user, on any instances, cannot both see
    # room for one more. On PostgreSQL the lock is a transaction-level advisory lock on the owner
    # (and the limit); SQLite has a single writer, whose lock the insert takes and the commit or
    # rollback gives back, so the count after the insert sees every other committed row and no
    # other writer can come in between.
    async def _lock_owner(self, limit: str, owner_id: str) -> None:
        if self.session.get_bind().dialect.name == "postgresql":
            await self.session.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                {"key": f"ultrai-documents:{limit}:{owner_id}"},
            )

    async def add_document_within(self, document: Document, max_documents: int, max_bytes: int) -> str | None:
        """Add the document unless it would take its owner past ``max_documents`` documents or
        ``max_bytes`` stored: then nothing is added (the transaction is rolled back) and the limit
        is named, ``"documents"`` or ``"bytes"``. The owner's lock is held until the caller commits
        (a user's uploads are stored one at a time)."""
        await self._lock_owner("storage", document.owner_id)
        await self.add_document(document)
        count, used = await self.usage(document.owner_id)
        exceeded = "documents" if count > max_documents else "bytes" if used > max_bytes else None
        if exceeded is not None:
            await self.rollback()
        return exceeded

    async def add_analysis_within(self, analysis: Analysis, max_active: int) -> bool:
        """Add the analysis unless its owner has ``max_active`` analyses queued or running already:
        then nothing is added (the transaction is rolled back) and the answer is False."""
        await self._lock_owner("analyses", analysis.owner_id)
        self.session.add(analysis)
        await self.session.flush()
        if await self.active_analyses(analysis.owner_id) > max_active:
            await self.rollback()
            return False
        return True

    # ---- documents ---------------------------------------------------------------------------
    async def owned_document(self, owner_id: str, document_id: str) -> Document | None:
        return await self.session.scalar(
            select(Document).where(Document.id == document_id, Document.owner_id == owner_id)
        )

    async def document(self, document_id: str) -> Document | None:
        return await self.session.get(Document, document_id)

    async def usage(self, owner_id: str) -> tuple[int, int]:
        """The owner's number of documents and their total size in bytes."""
        row = (
            await self.session.execute(
                select(func.count(Document.id), func.coalesce(func.sum(Document.size_bytes), 0)).where(
                    Document.owner_id == owner_id
                )
            )
        ).one()
        return int(row[0]), int(row[1])

    async def document_with_sha256(self, owner_id: str, sha256: str) -> Document | None:
        return await self.session.scalar(
            select(Document).where(Document.owner_id == owner_id, Document.sha256 == sha256)
        )

    async def documents_page(self, owner_id: str, limit: int, after: tuple[datetime, str] | None) -> list[Document]:
        """Up to ``limit`` documents, newest first, after the (created_at, id) of ``after``."""
        query = select(Document).where(Document.owner_id == owner_id)
        if after is not None:
            stamp, doc_id = after
            query = query.where(
                or_(Document.created_at < stamp, and_(Document.created_at == stamp, Document.id < doc_id))
            )
        query = query.order_by(Document.created_at.desc(), Document.id.desc()).limit(limit)
        return list((await self.session.scalars(query)).all())

    async def add_document(self, document: Document) -> None:
        self.session.add(document)
        await self.session.flush()

    async def add_original_part(self, document_id: str, seq: int, data: bytes) -> None:
        await self.session.execute(insert(DocumentBlob).values(document_id=document_id, seq=seq, data=data))

    async def add_text_part(self, document_id: str, seq: int, text: str) -> None:
        await self.session.execute(insert(DocumentText).values(document_id=document_id, seq=seq, text=text))

    async def add_chunks(self, rows: list[dict[str, Any]]) -> None:
        await self.session.execute(insert(Chunk), rows)

    async def original_part(self, document_id: str, seq: int) -> bytes | None:
        return await self.session.scalar(
            select(DocumentBlob.data).where(DocumentBlob.document_id == document_id, DocumentBlob.seq == seq)
        )

    async def text_part(self, document_id: str, seq: int) -> str | None:
        return await self.session.scalar(
            select(DocumentText.text).where(DocumentText.document_id == document_id, DocumentText.seq == seq)
        )

    async def full_text(self, document_id: str) -> str:
        parts = await self.session.scalars(
            select(DocumentText.text).where(DocumentText.document_id == document_id).order_by(DocumentText.seq)
        )
        return "".join(parts)

    async def chunks(self, document_id: str, offset: int, limit: int) -> list[Chunk]:
        query = select(Chunk).where(Chunk.document_id == document_id).order_by(Chunk.seq).offset(offset).limit(limit)
        return list((await self.session.scalars(query)).all())

    async def chunk_texts(self, document_id: str) -> list[str]:
        query = select(Chunk.text).where(Chunk.document_id == document_id).order_by(Chunk.seq)
        return list((await self.session.scalars(query)).all())

    async def delete_document(self, document_id: str) -> None:
        """The document with its parts, chunks, analyses and their events (not committed)."""
        await self._delete_documents(select(Document.id).where(Document.id == document_id))

    async def erase_owners(self, owner_ids: list[str]) -> None:
        """Everything held of these users (deleted accounts): their documents with every part, and
        their analyses with their events and tickets (not committed)."""
        await self._delete_documents(select(Document.id).where(Document.owner_id.in_(owner_ids)), owner_ids)

    async def _delete_documents(self, documents: Any, owner_ids: Collection[str] = ()) -> None:
        """The documents ``documents`` selects, with their parts and analyses, and every analysis
        and ticket of ``owner_ids``."""
        analyses = select(Analysis.id).where(or_(Analysis.document_id.in_(documents), Analysis.owner_id.in_(owner_ids)))
        tickets = or_(AnalysisTicket.analysis_id.in_(analyses), AnalysisTicket.owner_id.in_(owner_ids))
        await self.session.execute(delete(AnalysisEvent).where(AnalysisEvent.analysis_id.in_(analyses)))
        await self.session.execute(delete(AnalysisTicket).where(tickets))
        await self.session.execute(delete(Analysis).where(Analysis.id.in_(analyses)))
        for part in (Chunk, DocumentText, DocumentBlob):
            await self.session.execute(delete(part).where(part.document_id.in_(documents)))
        await self.session.execute(delete(Document).where(Document.id.in_(documents)))

    # ---- analyses ----------------------------------------------------------------------------
    async def analysis(self, analysis_id: str) -> Analysis | None:
        return await self.session.get(Analysis, analysis_id)

    async def owned_analysis(self, owner_id: str, document_id: str, analysis_id: str) -> Analysis | None:
        return await self.session.scalar(
            select(Analysis).where(
                Analysis.id == analysis_id, Analysis.document_id == document_id, Analysis.owner_id == owner_id
            )
        )

    async def latest_analysis(
        self, owner_id: str, document_id: str, params_hash: str, statuses: Collection[str]
    ) -> Analysis | None:
        """The owner's newest analysis of the document with these parameters, in one of ``statuses``."""
        return await self.session.scalar(
            select(Analysis)
            .where(
                Analysis.document_id == document_id,
                Analysis.owner_id == owner_id,
                Analysis.params_hash == params_hash,
                Analysis.status.in_(statuses),
            )
            .order_by(Analysis.created_at.desc())
            .limit(1)
        )

    async def active_analyses(self, owner_id: str) -> int:
        """How many of the owner's analyses are queued or running."""
        count = await self.session.scalar(
            select(func.count(Analysis.id)).where(Analysis.owner_id == owner_id, Analysis.status.in_(ACTIVE))
        )
        return int(count or 0)

    async def analyses_of(self, document_id: str, limit: int) -> list[Analysis]:
        query = (
            select(Analysis)
            .where(Analysis.document_id == document_id)
            .order_by(Analysis.created_at.desc())
            .limit(limit)
        )
        return list((await self.session.scalars(query)).all())

    async def add_analysis(self, analysis: Analysis) -> None:
        self.session.add(analysis)

    async def add_event(self, analysis_id: str, event: str, data: dict[str, Any]) -> None:
        self.session.add(AnalysisEvent(analysis_id=analysis_id, event=event, data=data))

    async def event_data(self, analysis_id: str, event: str) -> list[dict[str, Any]]:
        """The data of the analysis' events of one kind, oldest first."""
        query = (
            select(AnalysisEvent.data)
            .where(AnalysisEvent.analysis_id == analysis_id, AnalysisEvent.event == event)
            .order_by(AnalysisEvent.id)
        )
        return list((await self.session.scalars(query)).all())

    async def update_analysis(self, analysis_id: str, **values: Any) -> None:
        await self.session.execute(update(Analysis).where(Analysis.id == analysis_id).values(**values))

    async def claim_analysis(self, analysis_id: str, now: datetime, *, takeover: bool = False) -> int | None:
        """queued -> running, atomically: of two deliveries of the same analysis, one gets it. With
        ``takeover`` (the queue redelivers the analysis because the worker running it stopped
        beating), a running analysis is claimed as well. Returns the claim's fence (the analysis'
        new ``attempt``), or None when the analysis is not there to claim."""
        claimable = (
            or_(Analysis.status == "queued", Analysis.status == "running")
            if takeover
            else (Analysis.status == "queued")
        )
        result = await self.session.execute(
            update(Analysis)
            .where(Analysis.id == analysis_id, claimable)
            .values(
                status="running",
                stage="extraction",
                attempt=Analysis.attempt + 1,
                heartbeat_at=now,
                started_at=func.coalesce(Analysis.started_at, now),
            )
            .returning(Analysis.attempt)
        )
        return result.scalar_one_or_none()

    async def fenced_update(self, analysis_id: str, attempt: int, **values: Any) -> bool:
        """Change the analysis only while the claim ``attempt`` still owns it and it is running
        (not cancelled, not taken over). True when it did."""
        result = await self.session.execute(
            update(Analysis)
            .where(Analysis.id == analysis_id, Analysis.attempt == attempt, Analysis.status == "running")
            .values(**values)
        )
        return cast("CursorResult[Any]", result).rowcount == 1

    async def add_spent(self, analysis_id: str, attempt: int, prompt: int, completion: int, cost: float) -> None:
        """Usage of an answer that arrived after the analysis was cancelled: spent all the same."""
        await self.session.execute(
            update(Analysis)
            .where(Analysis.id == analysis_id, Analysis.attempt == attempt, Analysis.status == "cancelled")
            .values(
                prompt_tokens=Analysis.prompt_tokens + prompt,
                completion_tokens=Analysis.completion_tokens + completion,
                cost_usd=Analysis.cost_usd + cost,
            )
        )

    async def owns(self, analysis_id: str, attempt: int) -> bool:
        """Whether the claim ``attempt`` still owns the analysis and it is running."""
        found = await self.session.scalar(
            select(Analysis.id).where(
                Analysis.id == analysis_id, Analysis.attempt == attempt, Analysis.status == "running"
            )
        )
        return found is not None

    async def cancel_analysis(self, analysis_id: str, now: datetime) -> bool:
        """queued or running -> cancelled, atomically; False when it had already ended."""
        result = await self.session.execute(
            update(Analysis)
            .where(Analysis.id == analysis_id, Analysis.status.in_(ACTIVE))
            .values(status="cancelled", stage=None, finished_at=now)
        )
        return cast("CursorResult[Any]", result).rowcount == 1

    async def silent_analyses(self, silent_since: datetime) -> list[tuple[str, int]]:
        """Running analyses whose runner has not beaten since ``silent_since``: (id, attempt)."""
        query = select(Analysis.id, Analysis.attempt).where(
            Analysis.status == "running",
            or_(Analysis.heartbeat_at.is_(None), Analysis.heartbeat_at < silent_since),
        )
        return [(row.id, row.attempt) for row in (await self.session.execute(query)).all()]

    async def touch_analyses(self, analysis_ids: Collection[str], now: datetime) -> None:
        """The in-process runner's heartbeat for the analyses it is running."""
        if analysis_ids:
            await self.session.execute(
                update(Analysis)
                .where(Analysis.id.in_(list(analysis_ids)), Analysis.status == "running")
                .values(heartbeat_at=now)
            )

    async def analysis_status(self, analysis_id: str) -> str | None:
        return await self.session.scalar(select(Analysis.status).where(Analysis.id == analysis_id))

    async def events_after(self, analysis_id: str, last_id: int, limit: int) -> list[AnalysisEvent]:
        query = (
            select(AnalysisEvent)
            .where(AnalysisEvent.analysis_id == analysis_id, AnalysisEvent.id > last_id)
            .order_by(AnalysisEvent.id)
            .limit(limit)
        )
        return list((await self.session.scalars(query)).all())

    async def requeue_interrupted(self, silent_since: datetime) -> None:
        """Analyses whose runner has not beaten since ``silent_since`` (its process is gone) go back
        to the queue; those of a live process (a rolling deploy's old instance) stay with it."""
        await self.session.execute(
            update(Analysis)
            .where(
                Analysis.status == "running",
                or_(Analysis.heartbeat_at.is_(None), Analysis.heartbeat_at < silent_since),
            )
            .values(status="queued")
        )

    async def queued_analysis_ids(self) -> list[str]:
        return list((await self.session.scalars(select(Analysis.id).where(Analysis.status == "queued"))).all())

    # ---- tickets to an analysis' event stream -------------------------------------------------
    async def add_ticket(self, ticket: AnalysisTicket) -> None:
        self.session.add(ticket)

    async def drop_expired_tickets(self, now: datetime) -> None:
        await self.session.execute(delete(AnalysisTicket).where(AnalysisTicket.expires_at <= now))

    async def take_ticket(self, ticket_hash: str) -> tuple[str, str, datetime] | None:
        """Delete the ticket and return what it was for (analysis id, owner id, expiry), or None
        when there is no such ticket. One DELETE ... RETURNING: of two requests presenting the same
        ticket, on any instances, exactly one gets the row."""
        result = await self.session.execute(
            delete(AnalysisTicket)
            .where(AnalysisTicket.ticket_hash == ticket_hash)
            .returning(AnalysisTicket.analysis_id, AnalysisTicket.owner_id, AnalysisTicket.expires_at)
        )
        row = result.first()
        return None if row is None else (row[0], row[1], row[2])
