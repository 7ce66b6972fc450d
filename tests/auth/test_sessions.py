"""Accounts and sessions in process: register, login, /me, refresh rotation and reuse detection,
logout, password change, deletion, and which token is accepted where."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import func, select, update

from tests.support.users import PASSWORD, bearer, login, new_email, register, register_and_login
from ultrai_auth.models import Session, User

ME = "/api/v1/auth/me"
REFRESH = "/api/v1/auth/refresh"


async def test_register_login_me_refresh_logout(auth_client) -> None:
    async with auth_client() as client:
        email = new_email()
        created = await client.post("/api/v1/auth/register", json={"email": email.upper(), "password": PASSWORD})
        assert created.status_code == 201
        assert created.json()["email"] == email  # normalised
        assert "password" not in created.text
        tokens = await login(client, email)
        assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 900
        me = await client.get(ME, headers=bearer(tokens["access_token"]))
        assert me.status_code == 200 and me.json()["email"] == email
        rotated = await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
        assert rotated.status_code == 200
        new = rotated.json()
        assert new["refresh_token"] != tokens["refresh_token"]
        assert (await client.get(ME, headers=bearer(new["access_token"]))).status_code == 200
        out = await client.post("/api/v1/auth/logout", json={"refresh_token": new["refresh_token"]})
        assert out.status_code == 204
        assert (await client.post(REFRESH, json={"refresh_token": new["refresh_token"]})).status_code == 401
        assert (await client.get(ME, headers=bearer(new["access_token"]))).status_code == 401


async def test_email_is_unique_case_insensitively(auth_client) -> None:
    async with auth_client() as client:
        email = await register(client)
        again = await client.post("/api/v1/auth/register", json={"email": f"  {email.title()} ", "password": PASSWORD})
        assert again.status_code == 409
        assert again.headers["content-type"] == "application/problem+json"


async def test_concurrent_duplicate_registration_yields_one_account(auth_client) -> None:
    async with auth_client() as client:
        email = new_email("dup")
        answers = await asyncio.gather(
            *(client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD}) for _ in range(8))
        )
        codes = sorted(r.status_code for r in answers)
        assert codes == [201] + [409] * 7, codes
        async with client.app.state.db.sessions() as db:
            count = await db.scalar(select(func.count()).select_from(User).where(User.email == email))
        assert count == 1


async def test_refresh_reuse_revokes_the_whole_family(auth_client) -> None:
    # No reuse interval: a replay right after the rotation is reuse (test_reuse_interval.py: the interval).
    async with auth_client(refresh_reuse_interval_seconds=0) as client:
        _, first = await register_and_login(client)
        second = (await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})).json()
        # RT1 again: refused, and RT2 and the session's access tokens die with it.
        reuse = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
        assert reuse.status_code == 401
        assert (await client.post(REFRESH, json={"refresh_token": second["refresh_token"]})).status_code == 401
        assert (await client.get(ME, headers=bearer(second["access_token"]))).status_code == 401
        assert (await client.get(ME, headers=bearer(first["access_token"]))).status_code == 401


async def test_without_reuse_interval_concurrent_refreshes_cannot_both_succeed(auth_client) -> None:
    async with auth_client(refresh_reuse_interval_seconds=0) as client:
        _, tokens = await register_and_login(client)
        answers = await asyncio.gather(
            *(client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]}) for _ in range(10))
        )
        winners = [r.json() for r in answers if r.status_code == 200]
        assert len(winners) == 1, [r.status_code for r in answers]
        assert all(r.status_code == 401 for r in answers if r.status_code != 200)
        # The losers were replays of a spent token: the family is revoked, so no valid token remains.
        again = await client.post(REFRESH, json={"refresh_token": winners[0]["refresh_token"]})
        assert again.status_code == 401


async def test_refresh_past_its_absolute_lifetime_is_refused(auth_client) -> None:
    async with auth_client() as client:
        _, tokens = await register_and_login(client)
        async with client.app.state.db.sessions() as db:
            await db.execute(update(Session).values(expires_at=time.time() - 1))
            await db.commit()
        assert (await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})).status_code == 401


async def test_access_token_used_as_refresh_token_is_refused(auth_client) -> None:
    async with auth_client() as client:
        _, tokens = await register_and_login(client)
        resp = await client.post(REFRESH, json={"refresh_token": tokens["access_token"]})
        assert resp.status_code == 401


async def test_refresh_token_used_as_access_token_is_refused(auth_client) -> None:
    async with auth_client() as client:
        _, tokens = await register_and_login(client)
        resp = await client.get(ME, headers=bearer(tokens["refresh_token"]))
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"].startswith("Bearer")


async def test_service_token_where_an_access_token_is_expected_is_refused(auth_client) -> None:
    async with auth_client() as client:
        secret = client.app.state.settings.internal_token_secret.get_secret_value()
        minted = await client.post(
            "/api/v1/auth/service-token", json={"service": "documents", "audience": "auth"}, headers=bearer(secret)
        )
        assert minted.status_code == 200
        service_token = minted.json()["access_token"]
        assert (await client.get(ME, headers=bearer(service_token))).status_code == 401


async def test_service_token_endpoint_needs_the_internal_secret(auth_client) -> None:
    async with auth_client() as client:
        body = {"service": "documents", "audience": "llm"}
        assert (await client.post("/api/v1/auth/service-token", json=body)).status_code == 401
        wrong = await client.post("/api/v1/auth/service-token", json=body, headers=bearer("not-the-secret"))
        assert wrong.status_code == 401
        _, tokens = await register_and_login(client)
        as_user = await client.post("/api/v1/auth/service-token", json=body, headers=bearer(tokens["access_token"]))
        assert as_user.status_code == 401


async def test_logout_revokes_the_access_token_sent_with_it(auth_client) -> None:
    async with auth_client() as client:
        _, tokens = await register_and_login(client)
        out = await client.post(
            "/api/v1/auth/logout",
            json={"refresh_token": tokens["refresh_token"]},
            headers=bearer(tokens["access_token"]),
        )
        assert out.status_code == 204
        # The shared verifier (what every service runs) refuses it, not only auth's session check.
        verifier = client.app.state.verifier
        claims = await verifier.verify_signature(tokens["access_token"])
        assert await verifier.revocations.revoked(claims)


async def test_logout_with_an_unknown_token_answers_the_same(auth_client) -> None:
    async with auth_client() as client:
        resp = await client.post("/api/v1/auth/logout", json={"refresh_token": "no-such-token"})
        assert resp.status_code == 204


async def test_password_change_revokes_every_session(auth_client) -> None:
    async with auth_client() as client:
        email, one = await register_and_login(client)
        two = await login(client, email)
        new_password = "a brand new passphrase"
        changed = await client.post(
            "/api/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": new_password},
            headers=bearer(one["access_token"]),
        )
        assert changed.status_code == 204
        for tokens in (one, two):
            assert (await client.get(ME, headers=bearer(tokens["access_token"]))).status_code == 401
            assert (await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})).status_code == 401
        assert (await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})).status_code == 401
        fresh = await login(client, email, new_password)
        assert (await client.get(ME, headers=bearer(fresh["access_token"]))).status_code == 200


async def test_password_change_needs_the_current_password(auth_client) -> None:
    async with auth_client() as client:
        _, tokens = await register_and_login(client)
        resp = await client.post(
            "/api/v1/auth/password",
            json={"current_password": "not my password", "new_password": "a brand new passphrase"},
            headers=bearer(tokens["access_token"]),
        )
        assert resp.status_code == 401
        assert (await client.get(ME, headers=bearer(tokens["access_token"]))).status_code == 200


async def test_token_of_a_deleted_user_is_refused(auth_client) -> None:
    async with auth_client() as client:
        email, tokens = await register_and_login(client)
        wrong = await client.request(
            "DELETE", ME, json={"password": "not my password"}, headers=bearer(tokens["access_token"])
        )
        assert wrong.status_code == 401
        gone = await client.request("DELETE", ME, json={"password": PASSWORD}, headers=bearer(tokens["access_token"]))
        assert gone.status_code == 204
        assert (await client.get(ME, headers=bearer(tokens["access_token"]))).status_code == 401
        assert (await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})).status_code == 401
        verifier = client.app.state.verifier
        claims = await verifier.verify_signature(tokens["access_token"])
        assert await verifier.revocations.revoked(claims)
        assert (await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})).status_code == 401
        # The email is free again.
        assert (
            await client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
        ).status_code == 201


async def test_no_token_and_garbage_are_refused_at_me(auth_client) -> None:
    async with auth_client() as client:
        none = await client.get(ME)
        assert none.status_code == 401 and none.headers["www-authenticate"].startswith("Bearer")
        assert none.headers["content-type"] == "application/problem+json"
        assert (await client.get(ME, headers=bearer("garbage"))).status_code == 401
        assert (await client.get(ME, headers={"Authorization": "Basic dXNlcjpwYXNz"})).status_code == 401
