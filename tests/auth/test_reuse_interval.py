"""The reuse interval for concurrent refreshes (REFRESH_REUSE_INTERVAL_SECONDS, what Okta and Auth0
call the "reuse interval"): a refresh token presented again within it gets the same successor
instead of ending the session; after it, reuse still ends the whole family (RFC 9700 §4.14.2). The
successor waits in the shared store encrypted under the old token, so the store holds no usable
token; when it cannot be found, reuse detection answers, as it would without the interval."""

from __future__ import annotations

import asyncio
import time

import jwt
from sqlalchemy import update

from tests.auth.browser import ME, REFRESH, browser, cookie_login, cookie_value, set_cookie
from tests.support.users import PASSWORD, bearer, register, register_and_login
from ultrai_auth.models import RefreshToken
from ultrai_auth.sessions import token_hash
from ultrai_auth.successors import unseal


def sid(access_token: str) -> str:
    return jwt.decode(access_token, options={"verify_signature": False})["sid"]


async def spent_ago(client, token: str, seconds: float) -> None:
    """Move the moment ``token`` was spent ``seconds`` into the past (the clock of the interval)."""
    async with client.app.state.db.sessions() as db:
        await db.execute(
            update(RefreshToken)
            .where(RefreshToken.token_hash == token_hash(token))
            .values(used_at=time.time() - seconds)
        )
        await db.commit()


async def test_concurrent_body_refreshes_get_the_same_successor(auth_client) -> None:
    async with auth_client() as client:
        _, tokens = await register_and_login(client)
        answers = await asyncio.gather(
            *(client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]}) for _ in range(2))
        )
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
        tab_a, tab_b = (r.json() for r in answers)
        assert tab_a["refresh_token"] == tab_b["refresh_token"] != tokens["refresh_token"]
        assert sid(tab_a["access_token"]) == sid(tab_b["access_token"]) == sid(tokens["access_token"])
        for tab in (tab_a, tab_b):
            assert (await client.get(ME, headers=bearer(tab["access_token"]))).status_code == 200
        # Both tabs keep working: the successor refreshes again, for each of them.
        next_round = await asyncio.gather(
            *(client.post(REFRESH, json={"refresh_token": tab["refresh_token"]}) for tab in (tab_a, tab_b))
        )
        assert [r.status_code for r in next_round] == [200, 200]
        assert next_round[0].json()["refresh_token"] == next_round[1].json()["refresh_token"]
        for r in next_round:
            assert (await client.get(ME, headers=bearer(r.json()["access_token"]))).status_code == 200


async def test_many_concurrent_refreshes_all_get_the_one_successor(auth_client) -> None:
    async with auth_client() as client:
        _, tokens = await register_and_login(client)
        answers = await asyncio.gather(
            *(client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]}) for _ in range(8))
        )
        assert all(r.status_code == 200 for r in answers), [r.status_code for r in answers]
        assert len({r.json()["refresh_token"] for r in answers}) == 1


async def test_concurrent_cookie_refreshes_get_the_same_successor(auth_client) -> None:
    async with auth_client() as client:
        email = await register(client)
        token = cookie_value(await cookie_login(client, email, PASSWORD))
        answers = await asyncio.gather(*(client.post(REFRESH, headers=browser(token)) for _ in range(2)))
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
        successors = [cookie_value(r) for r in answers]
        assert successors[0] == successors[1] != token
        assert [set_cookie(r)[1]["Path"] for r in answers] == ["/api/v1/auth"] * 2
        assert all("refresh_token" not in r.json() for r in answers)
        for r in answers:
            assert (await client.get(ME, headers=bearer(r.json()["access_token"]))).status_code == 200
        next_round = await asyncio.gather(*(client.post(REFRESH, headers=browser(s)) for s in successors))
        assert [r.status_code for r in next_round] == [200, 200]
        assert cookie_value(next_round[0]) == cookie_value(next_round[1])


async def test_reuse_inside_the_interval_gets_the_successor_after_it_ends_the_family(auth_client) -> None:
    async with auth_client(refresh_reuse_interval_seconds=10) as client:
        _, first = await register_and_login(client)
        second = (await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})).json()
        # Just inside the interval: the same successor.
        await spent_ago(client, first["refresh_token"], 9)
        inside = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
        assert inside.status_code == 200
        assert inside.json()["refresh_token"] == second["refresh_token"]
        # Just past it: reuse, and the whole family ends.
        await spent_ago(client, first["refresh_token"], 10.5)
        after = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
        assert after.status_code == 401
        assert (await client.post(REFRESH, json={"refresh_token": second["refresh_token"]})).status_code == 401
        for access in (first["access_token"], second["access_token"], inside.json()["access_token"]):
            assert (await client.get(ME, headers=bearer(access))).status_code == 401


async def test_with_a_one_second_interval_reuse_after_it_ends_the_family(auth_client) -> None:
    async with auth_client(refresh_reuse_interval_seconds=1) as client:
        _, first = await register_and_login(client)
        rotated = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
        second = rotated.json()
        await asyncio.sleep(1.2)  # the interval is over (a slower machine is only further past it)
        reuse = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
        assert reuse.status_code == 401
        assert (await client.post(REFRESH, json={"refresh_token": second["refresh_token"]})).status_code == 401
        assert (await client.get(ME, headers=bearer(second["access_token"]))).status_code == 401


async def test_the_store_holds_the_successor_only_encrypted_under_the_old_token(auth_client) -> None:
    async with auth_client() as client:
        _, first = await register_and_login(client)
        second = (await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})).json()
        digest = token_hash(first["refresh_token"])
        sealed = await client.app.state.kv.get(f"refresh-successor:{digest}")
        assert sealed is not None
        for secret in (second["refresh_token"], second["access_token"], first["refresh_token"]):
            assert secret.encode() not in sealed
            assert secret[:16].encode() not in sealed
        assert unseal(first["refresh_token"] + "x", digest, sealed) is None
        opened = unseal(first["refresh_token"], digest, sealed)
        assert opened is not None and opened.refresh_token == second["refresh_token"]
        # Bound to the old token's hash: moved under another key, it does not open.
        assert unseal(first["refresh_token"], token_hash(second["refresh_token"]), sealed) is None


async def test_a_successor_that_cannot_be_found_falls_back_to_reuse_detection(auth_client) -> None:
    async with auth_client() as client:
        _, first = await register_and_login(client)
        second = (await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})).json()
        # As for a worker that does not share the store: inside the interval, but no successor.
        await client.app.state.kv.delete(f"refresh-successor:{token_hash(first['refresh_token'])}")
        reuse = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
        assert reuse.status_code == 401
        assert (await client.post(REFRESH, json={"refresh_token": second["refresh_token"]})).status_code == 401
        assert (await client.get(ME, headers=bearer(second["access_token"]))).status_code == 401


async def test_a_session_ended_inside_the_interval_gives_no_successor(auth_client) -> None:
    async with auth_client() as client:
        _, first = await register_and_login(client)
        second = (await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})).json()
        out = await client.post("/api/v1/auth/logout", json={"refresh_token": second["refresh_token"]})
        assert out.status_code == 204
        reuse = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
        assert reuse.status_code == 401


async def test_a_second_worker_answers_with_the_successor_through_redis(auth_client, redis_url) -> None:
    """Two auth instances on one database: with Redis, the one that lost the race finds the winner's
    successor; without a shared store it cannot, and reuse detection answers (fails closed)."""
    async with auth_client() as one, auth_client() as two:
        _, first = await register_and_login(one)
        second = await one.post(REFRESH, json={"refresh_token": first["refresh_token"]})
        assert second.status_code == 200
        other = await two.post(REFRESH, json={"refresh_token": first["refresh_token"]})
        if redis_url:
            assert other.status_code == 200
            assert other.json()["refresh_token"] == second.json()["refresh_token"]
        else:
            assert other.status_code == 401
            assert (await one.get(ME, headers=bearer(second.json()["access_token"]))).status_code == 401


async def test_with_the_interval_off_a_replay_is_reuse(auth_client) -> None:
    async with auth_client(refresh_reuse_interval_seconds=0) as client:
        _, first = await register_and_login(client)
        second = (await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})).json()
        assert await client.app.state.kv.get(f"refresh-successor:{token_hash(first['refresh_token'])}") is None
        assert (await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})).status_code == 401
        assert (await client.post(REFRESH, json={"refresh_token": second["refresh_token"]})).status_code == 401
