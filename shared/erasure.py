"""Erasing what a service holds of deleted accounts.

Auth owns accounts; documents and llm hold data of them (documents and analyses; usage,
conversations and cached answers) where auth never reads. When an account is deleted, auth lists it, in the
deletion's own transaction, once for each service in its ERASURE_SERVICES. Each such service runs an
``ErasureSweeper``: every ERASURE_POLL_SECONDS it asks auth for the accounts it has still to erase
(``GET /api/v1/auth/erasures``, shown INTERNAL_TOKEN_SECRET), erases them (the service's ``erase``,
one transaction) and reports them done (``POST /api/v1/auth/erasures/done``). Auth lists each
account once more ERASURE_REPEAT_SECONDS after its deletion (a second pass, for what work under way
then wrote after the first) and forgets it after that report.

Nothing is reported before it is erased: with auth away, the database away or an erase that raises,
the same accounts are listed again at the next sweep (erasing twice finds nothing the second time).
Several workers may sweep at once; at worst they erase the same accounts twice. Failures are
counted (``account_erasure_failures_total``) and the time of the last complete sweep is a gauge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from shared.client import ServiceClient, default_timeout
from shared.metrics import ERASED, ERASURE_FAILURES, ERASURE_SWEPT_AT
from shared.settings import ErasingSettings

if TYPE_CHECKING:
    import httpx

ERASURES_PATH = "/api/v1/auth/erasures"
Erase = Callable[[list[str]], Awaitable[None]]

log = logging.getLogger("shared.erasure")


class ErasureSweeper:
    """Asks auth for the accounts ``service`` has still to erase, erases them with ``erase`` (given
    their ids; it must leave nothing of them, and find nothing the second time), and reports them."""

    def __init__(
        self,
        settings: ErasingSettings,
        service: str,
        erase: Erase,
        *,
        batch: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.service = service
        self.erase = erase
        self.batch = batch
        self.interval = settings.erasure_poll_seconds
        secret = settings.internal_token_secret

        async def internal_credential() -> str:
            return secret.get_secret_value()

        self.auth = ServiceClient(
            "auth",
            str(settings.auth_url),
            timeout=default_timeout(connect=2.0, read=10.0),
            token=internal_credential,
            max_connections=2,
            transport=transport,
        )
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> int:
        """Erase every account auth lists for this service now; how many were erased."""
        erased = 0
        while True:
            listed = await self.auth.get(ERASURES_PATH, params={"service": self.service, "limit": self.batch})
            listed.raise_for_status()
            user_ids = [str(user_id) for user_id in listed.json()["user_ids"]]
            if user_ids:
                await self.erase(user_ids)
                done = await self.auth.post(
                    ERASURES_PATH + "/done", json={"service": self.service, "user_ids": user_ids}
                )
                done.raise_for_status()
                ERASED.labels(self.service).inc(len(user_ids))
                erased += len(user_ids)
                log.info("erased the data of %d deleted account(s)", len(user_ids))
            if len(user_ids) < self.batch:
                ERASURE_SWEPT_AT.labels(self.service).set(time.time())
                return erased

    def start(self) -> None:
        """Sweep every ERASURE_POLL_SECONDS in the background (never, when it is 0)."""
        if self.interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        # The first sweep waits a random part of the interval, so workers started together spread out.
        await asyncio.sleep(random.uniform(0, self.interval))
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # retried at the next sweep; the type only (no secret in a log)
                ERASURE_FAILURES.labels(self.service).inc()
                log.warning("erasure sweep failed (%s); retried in %.0f s", type(exc).__name__, self.interval)
            await asyncio.sleep(self.interval)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.auth.aclose()
