"""Starting an analysis and answering for it: the same request reuses the analysis it made before,
limits hold (document length, number of models, analyses running per user), and status and
progress are read back for the document's owner only."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.apikeys import KeyGrant
from shared.errors import ProblemError
from shared.tokens import unauthorized
from ultrai_documents.analysis.estimate import estimate_analysis, over_budget
from ultrai_documents.analysis.events import event_stream
from ultrai_documents.analysis.notify import Notifier
from ultrai_documents.analysis.runner import Runner
from ultrai_documents.documents import owned_document
from ultrai_documents.llm import Caller, ModelCatalog
from ultrai_documents.models import Analysis, AnalysisTicket, Document, new_id, utcnow
from ultrai_documents.repository import DocumentsRepository
from ultrai_documents.schemas import AnalysisRequest
from ultrai_documents.settings import DocumentsSettings

log = logging.getLogger("ultrai_documents.analyses")

# An analysis in one of these answers a request for the same one (unless it asks for a fresh one).
REUSABLE = ("completed", "queued", "running")
HISTORY = 100
DEFAULT_MODELS = 3
LLM_SCOPE = "llm"
BAD_TICKET = "The ticket is not valid: it expired, was used already, or is for another analysis."


def params_hash(params: dict[str, Any]) -> str:
    """What makes two requests the same analysis: their parameters, the models in any order."""
    key = dict(params)
    key["models"] = sorted(key["models"])
    return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def ticket_digest(ticket: str) -> str:
    """What is stored of a ticket: its SHA-256 (the ticket has 256 random bits, so no salt or slow
    hash is needed)."""
    return hashlib.sha256(ticket.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(eq=False)
class AnalysisService:
    repository: DocumentsRepository
    sessions: async_sessionmaker[AsyncSession]
    settings: DocumentsSettings
    runner: Runner
    models: ModelCatalog
    notifier: Notifier

    async def start(
        self, owner: str, document_id: str, request: AnalysisRequest, key: KeyGrant | None = None
    ) -> tuple[Analysis, bool]:
        """The analysis the request asks for, queued for the runner, or the same one made before.
        Returns (analysis, reused).

        With an API key (``key``): an analysis spends llm budget, so the key needs the ``llm`` scope
        as well as ``documents:write`` (403 otherwise), and the analysis' llm calls are made as the
        key's: recorded under it and held to its budget, rpm and tpm."""
        doc, params = await self._prepare(owner, document_id, request, key)
        digest = params_hash(params)
        if not request.fresh:
            previous = await self.repository.latest_analysis(owner, doc.id, digest, REUSABLE)
            if previous is not None:
                return previous, True
        await self._check_budget(owner, doc, params, key)
        analysis = Analysis(
            id=new_id(),
            document_id=doc.id,
            owner_id=owner,
            key_id=key.key_id if key is not None else None,
            kind=request.kind,
            params=params,
            params_hash=digest,
            status="queued",
        )
        # The limit is checked as the analysis is added, in one step: concurrent starts cannot pass it.
        if not await self.repository.add_analysis_within(analysis, self.settings.analysis_max_active_per_user):
            raise ProblemError(
                429, "Too many analyses are running for you; wait for one to finish.", headers={"Retry-After": "5"}
            )
        await self.repository.add_event(analysis.id, "status", {"status": "queued"})
        await self.repository.commit()
        await self.runner.submit(analysis.id)
        return analysis, False

    async def _prepare(
        self, owner: str, document_id: str, request: AnalysisRequest, key: KeyGrant | None
    ) -> tuple[Document, dict[str, Any]]:
        """What starting the analysis checks (403, 404, 422), and the parameters it runs on.
        Returns (document, params)."""
        if key is not None and LLM_SCOPE not in key.scopes:
            raise ProblemError(
                403,
                f"This API key does not have the {LLM_SCOPE} scope: an analysis spends llm budget.",
                title="Forbidden",
            )
        doc = await owned_document(self.repository, owner, document_id)
        await self.repository.release()
        if doc.chunk_count > self.settings.analysis_max_chunks:
            raise ProblemError(
                422,
                f"The document is too long to analyse ({doc.chunk_count} chunks; the limit is "
                f"{self.settings.analysis_max_chunks}).",
            )
        models = list(dict.fromkeys(request.models)) if request.models else await self._default_models()
        if len(models) > self.settings.analysis_max_models:
            raise ProblemError(422, f"Use at most {self.settings.analysis_max_models} models.")
        return doc, request.params(models, request.synthesis_model)

    async def estimate(
        self, owner: str, document_id: str, request: AnalysisRequest, key: KeyGrant | None = None
    ) -> dict[str, Any]:
        """What the analysis the request asks for would cost, make and take, and whether it fits the
        budget (``analysis.estimate``): checked as starting it is, with no model call and nothing
        stored."""
        doc, params = await self._prepare(owner, document_id, request, key)
        caller = Caller(owner, key.key_id if key is not None else None)
        answer = await estimate_analysis(self.repository, self.settings, self.models, caller, doc, params)
        assert answer is not None  # None only for a budget check
        return answer

    async def _check_budget(self, owner: str, doc: Document, params: dict[str, Any], key: KeyGrant | None) -> None:
        """Before an analysis is queued: refused (402) when its estimate does not fit in what is left
        of the budget, so it makes no call. When the llm service cannot estimate it (unreachable, not
        answering within ANALYSIS_BUDGET_CHECK_SECONDS, or refusing the request for another reason),
        the analysis is queued as before, as it is when the llm service is down: analyses wait for
        it, it refuses each call over budget itself (402 before the call), and a model it refuses is
        reported as that model's failure."""
        caller = Caller(owner, key.key_id if key is not None else None)
        try:
            deadline = asyncio.get_running_loop().time() + self.settings.analysis_budget_check_seconds
            answer = await estimate_analysis(
                self.repository, self.settings, self.models, caller, doc, params, budget_check=True, deadline=deadline
            )
        except ProblemError as exc:
            if exc.status == 402:
                raise
            log.info("analysis start: no estimate (%s %s); queued without the budget check", exc.status, exc.detail)
            return
        except TimeoutError:
            log.info("analysis start: no estimate within ANALYSIS_BUDGET_CHECK_SECONDS; queued without the check")
            return
        if answer is not None and not answer["budget"]["fits"]:
            raise over_budget(answer)

    async def _default_models(self) -> list[str]:
        """ANALYSIS_DEFAULT_MODELS, or the first models the llm service has available (its demo
        models only when it has no other)."""
        if self.settings.analysis_default_models:
            return list(self.settings.analysis_default_models)
        names = await self.models.available()
        if not names:
            raise ProblemError(422, "Name the models to use in 'models' (no default models are configured).")
        return names[:DEFAULT_MODELS]

    async def history(self, owner: str, document_id: str) -> list[Analysis]:
        """The document's latest analyses, newest first."""
        doc = await owned_document(self.repository, owner, document_id)
        return await self.repository.analyses_of(doc.id, HISTORY)

    async def get(self, owner: str, document_id: str, analysis_id: str) -> Analysis:
        await owned_document(self.repository, owner, document_id)
        analysis = await self.repository.owned_analysis(owner, document_id, analysis_id)
        if analysis is None:
            raise ProblemError(404, "No such analysis.")
        return analysis

    async def events(self, owner: str, document_id: str, analysis_id: str, last_id: int) -> AsyncIterator[bytes]:
        """The analysis' events after ``last_id``, as server-sent events, until its final one."""
        await self.get(owner, document_id, analysis_id)
        # The stream reads in short sessions of its own: a slow reader holds no connection.
        await self.repository.release()
        return event_stream(self.sessions, analysis_id, last_id, self.notifier)

    async def cancel(self, owner: str, document_id: str, analysis_id: str) -> Analysis:
        """Stop a queued or running analysis: status ``cancelled`` at once (the work's next write or
        call sees it and stops: no call is made after this), its job taken off the queue or its
        calls in flight cancelled. The usage spent so far stays recorded on it. An analysis that had
        already ended is answered as it is (409)."""
        analysis = await self.get(owner, document_id, analysis_id)
        # The row first, then the event: the row's lock orders the analysis' events (see the analyst).
        if not await self.repository.cancel_analysis(analysis.id, utcnow()):
            await self.repository.rollback()
            current = await self.get(owner, document_id, analysis_id)
            raise ProblemError(409, f"The analysis has already ended ({current.status}).", title="Conflict")
        await self.repository.add_event(analysis.id, "cancelled", {"status": "cancelled"})
        await self.repository.commit()
        await self.notifier.publish(analysis.id)
        await self.runner.cancel(analysis.id)
        return await self.get(owner, document_id, analysis_id)

    async def ticket(self, owner: str, document_id: str, analysis_id: str) -> tuple[str, int]:
        """A new single-use ticket to the owner's analysis' event stream, and its lifetime in
        seconds. Returns (ticket, expires_in)."""
        analysis = await self.get(owner, document_id, analysis_id)
        ticket = secrets.token_urlsafe(32)
        lifetime = self.settings.analysis_ticket_seconds
        now = utcnow()
        await self.repository.drop_expired_tickets(now)
        await self.repository.add_ticket(
            AnalysisTicket(
                ticket_hash=ticket_digest(ticket),
                analysis_id=analysis.id,
                owner_id=owner,
                expires_at=now + timedelta(seconds=lifetime),
            )
        )
        await self.repository.commit()
        return ticket, lifetime

    async def redeem(self, analysis_id: str, ticket: str) -> str:
        """Spend a ticket on the event stream of ``analysis_id``: the user it was issued to, or a
        401. The first presentation spends it, whatever the outcome, so a ticket is tried once."""
        taken = await self.repository.take_ticket(ticket_digest(ticket))
        await self.repository.commit()
        if taken is None:
            raise unauthorized(BAD_TICKET)
        for_analysis, owner, expires = taken
        # SQLite gives back naive datetimes; they were written in UTC.
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        if for_analysis != analysis_id or expires <= utcnow():
            raise unauthorized(BAD_TICKET)
        return owner
