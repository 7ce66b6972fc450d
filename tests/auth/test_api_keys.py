"""API keys at auth, in process: create (shown once), list (never the key), revoke, rotate; and the
resolution every service goes through (shared.apikeys.KeyResolver, over HTTP to this auth app):
expiry, account deletion, the brute-force throttle, and that the hash at rest is not a key."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from shared.apikeys import INVALID_KEY, KeyResolver, key_hash, new_key
from shared.errors import ProblemError
from shared.settings import ServiceSettings
from tests.support.users import PASSWORD, bearer, login, register
from ultrai_auth.models import ApiKey

KEYS = "/api/v1/auth/keys"


async def account(client: httpx.AsyncClient) -> dict[str, str]:
    email = f"keys-{time.monotonic_ns()}@example.com"
    await register(client, email)
    tokens = await login(client, email)
    return bearer(tokens["access_token"])


def resolver_for(client: httpx.AsyncClient, **settings: Any) -> KeyResolver:
    """The resolver every service uses, talking to this auth app in process."""
    transport = httpx.ASGITransport(app=client.app)  # type: ignore[attr-defined]
    return KeyResolver(ServiceSettings(auth_url="http://auth.test", **settings), transport=transport)


async def refused(resolver: KeyResolver, key: str, address: str = "198.51.100.1") -> ProblemError:
    with pytest.raises(ProblemError) as info:
        await resolver.resolve(key, address)
    return info.value


async def test_create_list_revoke_rotate_and_the_key_is_shown_once(auth_client) -> None:
    async with auth_client() as client:
        me = await account(client)
        resp = await client.post(KEYS, json={"name": "ci", "scopes": ["llm"], "rpm": 10}, headers=me)
        assert resp.status_code == 201, resp.text
        created = resp.json()
        key = created["key"]
        assert key.startswith(f"uai_{created['id']}_") and len(key) == 4 + 12 + 1 + 43
        assert created["scopes"] == ["llm"] and created["rpm"] == 10 and created["prefix"] == f"uai_{created['id']}_"
        # No scopes: all of them.
        every = (await client.post(KEYS, json={"name": "all"}, headers=me)).json()
        assert every["scopes"] == ["llm", "documents:read", "documents:write"]

        listing = await client.get(KEYS, headers=me)
        assert listing.status_code == 200
        assert {k["id"] for k in listing.json()["keys"]} == {created["id"], every["id"]}
        assert key not in listing.text and every["key"] not in listing.text and "key_hash" not in listing.text

        # Stored only as its hash.
        async with client.app.state.db.sessions() as session:  # type: ignore[attr-defined]
            row = (await session.execute(select(ApiKey).where(ApiKey.id == created["id"]))).scalar_one()
        assert row.key_hash == key_hash(key) and key not in repr(row.__dict__)

        rotated = await client.post(f"{KEYS}/{created['id']}/rotate", headers=me)
        assert rotated.status_code == 201
        fresh = rotated.json()
        assert fresh["key"] != key and fresh["scopes"] == ["llm"] and fresh["rpm"] == 10 and fresh["name"] == "ci"
        resolver = resolver_for(client)
        try:
            assert (await refused(resolver, key)).status == 401  # the rotated-out key
            assert (await resolver.resolve(fresh["key"], "198.51.100.1")).key_id == fresh["id"]
        finally:
            await resolver.aclose()

        assert (await client.delete(f"{KEYS}/{fresh['id']}", headers=me)).status_code == 204
        assert (await client.delete(f"{KEYS}/{fresh['id']}", headers=me)).status_code == 404
        ids = {k["id"] for k in (await client.get(KEYS, headers=me)).json()["keys"]}
        assert ids == {every["id"]}
        # Revocation is announced like a token's: a key:<id> entry every verifier reads.
        assert fresh["id"] in client.app.state.revoker.listing()["key"]  # type: ignore[attr-defined]


async def test_another_accounts_key_is_a_404_and_keys_cannot_make_keys(auth_client) -> None:
    async with auth_client() as client:
        alice, bob = await account(client), await account(client)
        key = (await client.post(KEYS, json={"name": "a"}, headers=alice)).json()
        assert (await client.delete(f"{KEYS}/{key['id']}", headers=bob)).status_code == 404
        assert (await client.post(f"{KEYS}/{key['id']}/rotate", headers=bob)).status_code == 404
        # A key is no credential for account operations.
        for method, path in (("GET", KEYS), ("POST", KEYS), ("GET", "/api/v1/auth/me")):
            resp = await client.request(method, path, headers=bearer(key["key"]), json={"name": "x"})
            assert resp.status_code == 401, (method, path)
            assert key["key"] not in resp.text
        bad = await client.post(KEYS, json={"name": "x", "scopes": ["admin"]}, headers=alice)
        assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
        assert (await client.post(KEYS, json={"name": "x"})).status_code == 401


async def test_resolution_answers_the_grant_and_records_last_use(auth_client) -> None:
    async with auth_client() as client:
        me = await account(client)
        made = (await client.post(KEYS, json={"name": "r", "budget_usd": 2.5, "tpm": 100}, headers=me)).json()
        assert made["last_used_at"] is None
        resolver = resolver_for(client)
        try:
            grant = await resolver.resolve(made["key"], "198.51.100.1")
        finally:
            await resolver.aclose()
        assert grant.key_id == made["id"] and grant.budget_usd == 2.5 and grant.tpm == 100
        listed = (await client.get(KEYS, headers=me)).json()["keys"][0]
        assert listed["last_used_at"] is not None
        # The internal endpoints want the internal secret.
        resp = await client.post(f"{KEYS}/resolve", json={"hash": key_hash(made["key"]), "address": "x"}, headers=me)
        assert resp.status_code == 401 and made["id"] not in resp.text


async def test_an_expired_key_is_refused_like_a_wrong_one(auth_client) -> None:
    async with auth_client() as client:
        me = await account(client)
        made = (await client.post(KEYS, json={"name": "e", "expires_in_days": 1}, headers=me)).json()
        assert made["expires_at"] > time.time() + 86_000
        async with client.app.state.db.sessions() as session:  # type: ignore[attr-defined]
            await session.execute(update(ApiKey).where(ApiKey.id == made["id"]).values(expires_at=time.time() - 1))
            await session.commit()
        resolver = resolver_for(client, api_key_cache_seconds=0)
        try:
            problem = await refused(resolver, made["key"])
        finally:
            await resolver.aclose()
        assert problem.status == 401 and problem.detail == INVALID_KEY


async def test_a_deleted_accounts_keys_die_with_it(auth_client) -> None:
    async with auth_client() as client:
        me = await account(client)
        made = (await client.post(KEYS, json={"name": "d"}, headers=me)).json()
        resp = await client.request("DELETE", "/api/v1/auth/me", json={"password": PASSWORD}, headers=me)
        assert resp.status_code == 204
        resolver = resolver_for(client, api_key_cache_seconds=0)
        try:
            assert (await refused(resolver, made["key"])).status == 401
        finally:
            await resolver.aclose()


async def test_guessing_is_throttled_per_address_and_indistinguishable_from_a_wrong_key(auth_client) -> None:
    async with auth_client(api_key_failures_per_address="4/minute") as client:
        me = await account(client)
        made = (await client.post(KEYS, json={"name": "g"}, headers=me)).json()
        good = made["key"]
        _, unknown = new_key()
        wrong_secret = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
        resolver = resolver_for(client, api_key_cache_seconds=0)
        try:
            answers = [await refused(resolver, k, "198.51.100.9") for k in (unknown, wrong_secret, unknown)]
            # An unknown id and a known id with a wrong secret get the very same answer.
            assert {(p.status, p.detail, p.title) for p in answers} == {(401, INVALID_KEY, "Unauthorized")}
            assert (await refused(resolver, wrong_secret, "198.51.100.9")).status == 401
            # Past the limit, every key from that address is refused, the real one too.
            throttled = await refused(resolver, unknown, "198.51.100.9")
            assert throttled.status == 429 and int(throttled.headers["Retry-After"]) > 0
            assert (await refused(resolver, good, "198.51.100.9")).status == 429
            # Another address is not affected.
            assert (await resolver.resolve(good, "198.51.100.10")).key_id == made["id"]
        finally:
            await resolver.aclose()


async def test_the_hash_at_rest_is_not_a_key(auth_client) -> None:
    async with auth_client() as client:
        me = await account(client)
        made = (await client.post(KEYS, json={"name": "h"}, headers=me)).json()
        async with client.app.state.db.sessions() as session:  # type: ignore[attr-defined]
            stored = (await session.execute(select(ApiKey.key_hash).where(ApiKey.id == made["id"]))).scalar_one()
        resolver = resolver_for(client, api_key_cache_seconds=0)
        try:
            for attempt in (stored, f"uai_{made['id']}_{stored}", f"uai_{made['id']}_{stored[:43]}"):
                problem = await refused(resolver, attempt)
                assert problem.status == 401 and problem.detail == INVALID_KEY
        finally:
            await resolver.aclose()
        assert (await client.get(KEYS, headers=bearer(stored))).status_code == 401


async def test_a_key_by_id_is_granted_only_for_its_user_while_it_lives(auth_client) -> None:
    """What a service acting for a user with the user's key asks (``KeyResolver.resolve_id``)."""
    async with auth_client() as client:
        me, other = await account(client), await account(client)
        user = (await client.get("/api/v1/auth/me", headers=me)).json()["id"]
        stranger = (await client.get("/api/v1/auth/me", headers=other)).json()["id"]
        made = (await client.post(KEYS, json={"name": "i", "scopes": ["llm"], "rpm": 7}, headers=me)).json()
        resolver = resolver_for(client, api_key_cache_seconds=0)
        try:
            grant = await resolver.resolve_id(made["id"], user)
            assert (grant.key_id, grant.user_id, grant.scopes, grant.rpm) == (made["id"], user, ("llm",), 7)
            # Another user's key, an unknown id, a malformed one: the one refusal of an invalid key.
            for user_id, key_id in ((stranger, made["id"]), (user, "a" * 12), (user, "../../me")):
                with pytest.raises(ProblemError) as info:
                    await resolver.resolve_id(key_id, user_id)
                assert (info.value.status, info.value.detail) == (401, INVALID_KEY)
            # The endpoint wants the internal secret.
            body = {"key_id": made["id"], "user_id": user}
            resp = await client.post(f"{KEYS}/grant", json=body, headers=me)
            assert resp.status_code == 401 and "rpm" not in resp.text
            # Revoked, or the account deleted: refused.
            assert (await client.delete(f"{KEYS}/{made['id']}", headers=me)).status_code == 204
            with pytest.raises(ProblemError):
                await resolver.resolve_id(made["id"], user)
            other_key = (await client.post(KEYS, json={"name": "j"}, headers=other)).json()
            assert (await resolver.resolve_id(other_key["id"], stranger)).key_id == other_key["id"]
            resp = await client.request("DELETE", "/api/v1/auth/me", json={"password": PASSWORD}, headers=other)
            assert resp.status_code == 204
            with pytest.raises(ProblemError):
                await resolver.resolve_id(other_key["id"], stranger)
        finally:
            await resolver.aclose()


async def test_resolution_is_a_read_and_records_last_use_to_the_minute(auth_client) -> None:
    """A resolution writes the key's last use only when the recorded one is a minute old or more
    (a write on every resolution was most of a cold resolution's cost)."""
    async with auth_client() as client:
        me = await account(client)
        made = (await client.post(KEYS, json={"name": "m"}, headers=me)).json()
        resolver = resolver_for(client, api_key_cache_seconds=0)

        async def last_used() -> float | None:
            async with client.app.state.db.sessions() as session:  # type: ignore[attr-defined]
                query = select(ApiKey.last_used_at).where(ApiKey.id == made["id"])
                return (await session.execute(query)).scalar_one()

        async def set_last_used(value: float) -> None:
            async with client.app.state.db.sessions() as session:  # type: ignore[attr-defined]
                await session.execute(update(ApiKey).where(ApiKey.id == made["id"]).values(last_used_at=value))
                await session.commit()

        try:
            await resolver.resolve(made["key"], "198.51.100.1")
            first = await last_used()
            assert first is not None
            recent = time.time() - 30
            await set_last_used(recent)
            await resolver.resolve(made["key"], "198.51.100.1")
            assert await last_used() == recent  # within the minute: not written again
            await set_last_used(time.time() - 61)
            await resolver.resolve(made["key"], "198.51.100.1")
            assert (await last_used() or 0) > time.time() - 5
        finally:
            await resolver.aclose()
