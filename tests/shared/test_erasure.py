"""The erasure sweeper against the auth service itself (in process): what it erases, what it reports,
and that nothing is reported that was not erased."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.erasure import ErasureSweeper
from shared.metrics import ERASED, ERASURE_FAILURES
from shared.settings import ErasingSettings
from tests.support.users import PASSWORD, bearer, register_and_login
from tests.support.waiting import eventually
from ultrai_auth.main import build
from ultrai_auth.settings import AuthSettings

ME = "/api/v1/auth/me"


@asynccontextmanager
async def auth_app(tmp: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = AuthSettings(
        environment="test", data_dir=tmp, argon2_memory_kib=64, argon2_time_cost=1, log_format="text"
    )
    app = build(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://auth.test") as client:
            yield client


async def deleted_accounts(auth: httpx.AsyncClient, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        _, tokens = await register_and_login(auth)
        me = bearer(tokens["access_token"])
        ids.append((await auth.get(ME, headers=me)).json()["id"])
        resp = await auth.request("DELETE", ME, json={"password": PASSWORD}, headers=me)
        assert resp.status_code == 204
    return ids


def sweeper_on(auth: httpx.AsyncClient, erase: Any, **options: Any) -> ErasureSweeper:
    settings = ErasingSettings(environment="test", auth_url="http://auth.test", **options.pop("settings", {}))
    return ErasureSweeper(settings, "documents", erase, transport=auth._transport, **options)


async def listed(auth: httpx.AsyncClient, service: str = "documents") -> list[str]:
    secret = ErasingSettings(environment="test").internal_token_secret.get_secret_value()
    resp = await auth.get("/api/v1/auth/erasures", params={"service": service}, headers=bearer(secret))
    return resp.json()["user_ids"]


async def test_every_listed_account_is_erased_and_reported_in_batches(tmp_dir: Path) -> None:
    async with auth_app(tmp_dir) as auth:
        ids = await deleted_accounts(auth, 5)
        batches: list[list[str]] = []

        async def erase(user_ids: list[str]) -> None:
            batches.append(user_ids)

        sweeper = sweeper_on(auth, erase, batch=2)
        before = ERASED.labels("documents")._value.get()
        try:
            assert await sweeper.sweep() == 5
            assert batches == [ids[:2], ids[2:4], ids[4:]]
            assert await listed(auth) == []  # reported: auth forgets them for this service
            assert await listed(auth, "llm") == ids  # and only for it
            assert await sweeper.sweep() == 0
            assert len(batches) == 3
            assert ERASED.labels("documents")._value.get() - before == 5
        finally:
            await sweeper.aclose()


async def test_an_erase_that_fails_reports_nothing(tmp_dir: Path) -> None:
    async with auth_app(tmp_dir) as auth:
        ids = await deleted_accounts(auth, 2)

        async def erase(user_ids: list[str]) -> None:
            raise RuntimeError("the database went away")

        sweeper = sweeper_on(auth, erase)
        try:
            with pytest.raises(RuntimeError):
                await sweeper.sweep()
            assert await listed(auth) == ids  # listed again at the next sweep
        finally:
            await sweeper.aclose()


async def test_the_background_sweep_keeps_trying_while_erasing_fails(tmp_dir: Path) -> None:
    async with auth_app(tmp_dir) as auth:
        ids = await deleted_accounts(auth, 1)
        calls: list[list[str]] = []

        async def erase(user_ids: list[str]) -> None:
            calls.append(user_ids)
            if len(calls) < 3:
                raise RuntimeError("the database is busy")

        failures = ERASURE_FAILURES.labels("documents")._value.get()
        sweeper = sweeper_on(auth, erase, settings={"erasure_poll_seconds": 0.05})
        sweeper.start()
        try:
            await eventually(lambda: listed(auth), lambda names: names == [], what="the third try erases")
            assert calls == [ids, ids, ids]
            assert ERASURE_FAILURES.labels("documents")._value.get() - failures == 2
        finally:
            await sweeper.aclose()


async def test_auth_away_is_a_counted_failure_and_nothing_is_erased() -> None:
    erased: list[list[str]] = []

    async def erase(user_ids: list[str]) -> None:
        erased.append(user_ids)

    settings = ErasingSettings(environment="test", auth_url="http://127.0.0.1:9", erasure_poll_seconds=0.05)
    sweeper = ErasureSweeper(settings, "documents", erase)
    failures = ERASURE_FAILURES.labels("documents")._value.get()
    sweeper.start()
    try:

        async def counted() -> float:
            return ERASURE_FAILURES.labels("documents")._value.get() - failures

        await eventually(counted, lambda n: n >= 2, what="two failed sweeps")
        assert erased == []
    finally:
        await sweeper.aclose()


def test_no_sweep_runs_when_the_interval_is_zero() -> None:
    async def erase(user_ids: list[str]) -> None:
        raise AssertionError("no sweep")

    sweeper = ErasureSweeper(ErasingSettings(environment="test", erasure_poll_seconds=0), "documents", erase)
    sweeper.start()  # outside a running loop: nothing is scheduled, so nothing fails
    assert sweeper._task is None
