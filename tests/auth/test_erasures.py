"""A deleted account is listed, for each service that holds data of accounts, until that service
reports the account's data erased (the internal ``/api/v1/auth/erasures``)."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from tests.support.users import PASSWORD, bearer, register_and_login
from tests.support.waiting import eventually
from ultrai_auth.models import AccountErasure

ME = "/api/v1/auth/me"
ERASURES = "/api/v1/auth/erasures"


def internal(client: httpx.AsyncClient) -> dict[str, str]:
    return bearer(client.app.state.settings.internal_token_secret.get_secret_value())  # type: ignore[attr-defined]


async def new_account(client: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    """A logged-in account: its id and its access token's header."""
    _, tokens = await register_and_login(client)
    me = bearer(tokens["access_token"])
    return (await client.get(ME, headers=me)).json()["id"], me


async def delete_account(client: httpx.AsyncClient, me: dict[str, str], password: str = PASSWORD) -> int:
    return (await client.request("DELETE", ME, json={"password": password}, headers=me)).status_code


async def pending(client: httpx.AsyncClient, service: str, **params: object) -> list[str]:
    resp = await client.get(ERASURES, params={"service": service, **params}, headers=internal(client))
    assert resp.status_code == 200, resp.text
    return resp.json()["user_ids"]


async def test_a_deleted_account_is_listed_for_each_service_until_it_reports_it_erased(auth_client) -> None:
    async with auth_client() as client:
        gone, gone_me = await new_account(client)
        kept, _ = await new_account(client)
        assert await delete_account(client, gone_me) == 204

        assert await pending(client, "documents") == [gone]
        assert await pending(client, "llm") == [gone]
        done = await client.post(
            f"{ERASURES}/done", json={"service": "documents", "user_ids": [gone]}, headers=internal(client)
        )
        assert done.status_code == 204
        assert await pending(client, "documents") == []
        assert await pending(client, "llm") == [gone]  # one service's report is its own
        assert kept not in await pending(client, "llm")
        # Reported twice (two workers swept at once): the same answer, nothing else changes.
        again = await client.post(
            f"{ERASURES}/done", json={"service": "documents", "user_ids": [gone]}, headers=internal(client)
        )
        assert again.status_code == 204
        assert await pending(client, "llm") == [gone]


async def test_a_refused_deletion_lists_nothing(auth_client) -> None:
    async with auth_client() as client:
        _, me = await new_account(client)
        assert await delete_account(client, me, "not the password") == 401
        assert await pending(client, "documents") == []


async def test_oldest_deletion_first_and_at_most_limit(auth_client) -> None:
    async with auth_client() as client:
        deleted = []
        for _ in range(3):
            user_id, me = await new_account(client)
            assert await delete_account(client, me) == 204
            deleted.append(user_id)
        assert await pending(client, "llm", limit=2) == deleted[:2]
        assert await pending(client, "llm") == deleted


async def test_only_the_services_named_in_erasure_services_are_told(auth_client) -> None:
    async with auth_client(erasure_services=["documents"]) as client:
        gone, me = await new_account(client)
        assert await delete_account(client, me) == 204
        assert await pending(client, "documents") == [gone]
        unknown = await client.get(ERASURES, params={"service": "llm"}, headers=internal(client))
        assert unknown.status_code == 422
        assert unknown.headers["content-type"].startswith("application/problem+json")
        assert "ERASURE_SERVICES" in unknown.json()["detail"]


async def test_the_erasure_list_needs_the_internal_secret(auth_client) -> None:
    async with auth_client() as client:
        gone, me = await new_account(client)
        _, other = await new_account(client)
        assert await delete_account(client, me) == 204
        report = {"service": "documents", "user_ids": [gone]}
        for headers in ({}, bearer("not-the-secret"), other):
            listed = await client.get(ERASURES, params={"service": "documents"}, headers=headers)
            assert listed.status_code == 401
            assert listed.headers["content-type"].startswith("application/problem+json")
            assert (await client.post(f"{ERASURES}/done", json=report, headers=headers)).status_code == 401
        assert await pending(client, "documents") == [gone]  # no report got through


async def test_bad_erasure_requests_are_422_problems(auth_client) -> None:
    async with auth_client() as client:
        secret = internal(client)
        bad_lists = [
            {"service": "Documents"},
            {"service": "documents", "limit": 0},
            {"service": "documents", "limit": 1001},
            {},
        ]
        for params in bad_lists:
            resp = await client.get(ERASURES, params=params, headers=secret)
            assert resp.status_code == 422, params
            assert resp.headers["content-type"].startswith("application/problem+json")
        bad_reports = [
            {"service": "documents", "user_ids": []},
            {"service": "documents", "user_ids": ["../../etc"]},
            {"service": "documents", "user_ids": ["0" * 36] * 1001},
            {"service": "documents", "user_ids": ["0" * 36], "extra": 1},
            {"service": "nobody", "user_ids": ["0" * 36]},
        ]
        for body in bad_reports:
            resp = await client.post(f"{ERASURES}/done", json=body, headers=secret)
            assert resp.status_code == 422, body
            assert resp.headers["content-type"].startswith("application/problem+json")


async def test_each_service_is_asked_a_second_time_after_erasure_repeat_seconds(auth_client) -> None:
    """What work under way when the account went wrote after the first pass (an llm call's usage)
    is erased by a second: the account is due again ERASURE_REPEAT_SECONDS after its deletion, and
    the report after that forgets it."""
    async with auth_client(erasure_repeat_seconds=0.5) as client:
        gone, me = await new_account(client)
        assert await delete_account(client, me) == 204
        report = {"service": "llm", "user_ids": [gone]}
        assert await pending(client, "llm") == [gone]
        assert (await client.post(f"{ERASURES}/done", json=report, headers=internal(client))).status_code == 204
        assert await pending(client, "llm") == []  # not due before its second pass
        await eventually(lambda: pending(client, "llm"), lambda ids: ids == [gone], what="the second pass is due")
        assert (await client.post(f"{ERASURES}/done", json=report, headers=internal(client))).status_code == 204
        async with client.app.state.db.sessions() as session:  # type: ignore[attr-defined]
            left = await session.scalar(select(func.count()).where(AccountErasure.user_id == gone))
        assert left == 1  # documents has not reported yet; llm's row is gone for good
        assert await pending(client, "documents") == [gone]
