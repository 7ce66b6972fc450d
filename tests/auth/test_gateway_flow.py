"""The whole flow through the gateway, against the real processes (the `stack` fixture): register,
login, /me, refresh, logout; the gateway's edge check; revocation seen at the edge; and the
per-address limit that a client cannot dodge with its own X-Forwarded-For."""

from __future__ import annotations

import asyncio
import secrets
import time

import httpx
import pytest

pytestmark = pytest.mark.e2e
PASSWORD = "gateway flow passphrase"


def email() -> str:
    return f"e2e-{secrets.token_hex(5)}@example.com"


async def signup(client: httpx.AsyncClient, base: str) -> tuple[str, dict]:
    address = email()
    created = await client.post(base + "/api/v1/auth/register", json={"email": address, "password": PASSWORD})
    assert created.status_code == 201, created.text
    login = await client.post(base + "/api/v1/auth/login", json={"email": address, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return address, login.json()


async def eventually_401(client: httpx.AsyncClient, url: str, token: str, seconds: float = 10.0) -> httpx.Response:
    """Verifiers without Redis read auth's revocation list every REVOCATION_POLL_SECONDS (1 s)."""
    deadline = time.monotonic() + seconds
    while True:
        resp = await client.get(url, headers={"Authorization": f"Bearer {token}"})
        if resp.status_code == 401 or time.monotonic() > deadline:
            return resp
        await asyncio.sleep(0.2)


async def test_register_login_me_refresh_logout_through_the_gateway(stack) -> None:
    base = stack.url("gateway")
    async with httpx.AsyncClient(timeout=15) as client:
        address, tokens = await signup(client, base)
        assert set(tokens) == {"access_token", "refresh_token", "token_type", "expires_in"}
        me = await client.get(base + "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert me.status_code == 200 and me.json()["email"] == address
        rotated = await client.post(base + "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert rotated.status_code == 200
        new = rotated.json()
        me2 = await client.get(base + "/api/v1/auth/me", headers={"Authorization": f"Bearer {new['access_token']}"})
        assert me2.status_code == 200
        out = await client.post(base + "/api/v1/auth/logout", json={"refresh_token": new["refresh_token"]})
        assert out.status_code == 204
        after = await client.get(base + "/api/v1/auth/me", headers={"Authorization": f"Bearer {new['access_token']}"})
        assert after.status_code == 401
        again = await client.post(base + "/api/v1/auth/refresh", json={"refresh_token": new["refresh_token"]})
        assert again.status_code == 401
        jwks = await client.get(base + "/.well-known/jwks.json")
        assert jwks.status_code == 200 and jwks.json()["keys"]


@pytest.mark.parametrize(
    "path", ["/api/v1/documents/anything", "/api/v1/llm/anything", "/v1/models", "/api/v1/auth/me"]
)
async def test_the_gateway_refuses_a_missing_token_at_the_edge(stack, path: str) -> None:
    rid = f"edge-{secrets.token_hex(6)}"
    async with httpx.AsyncClient(timeout=15) as client:
        resp = await client.get(stack.url("gateway") + path, headers={"X-Request-ID": rid})
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert resp.headers["content-type"] == "application/problem+json"
    await asyncio.sleep(0.2)
    for name in ("auth", "documents", "llm"):
        assert rid not in (stack.workdir / f"{name}.log").read_text(), f"{name} was reached"


async def test_the_gateway_refuses_a_garbage_or_forged_token_at_the_edge(stack) -> None:
    base = stack.url("gateway")
    async with httpx.AsyncClient(timeout=15) as client:
        _, tokens = await signup(client, base)
        head, payload, _sig = tokens["access_token"].split(".")
        for token in ("garbage", f"{head}.{payload}.", tokens["refresh_token"]):
            resp = await client.get(base + "/api/v1/documents/x", headers={"Authorization": f"Bearer {token}"})
            assert resp.status_code == 401


async def test_a_valid_token_passes_the_edge(stack) -> None:
    base = stack.url("gateway")
    rid = f"pass-{secrets.token_hex(6)}"
    async with httpx.AsyncClient(timeout=15) as client:
        _, tokens = await signup(client, base)
        headers = {"Authorization": f"Bearer {tokens['access_token']}", "X-Request-ID": rid}
        await client.get(base + "/api/v1/llm/no-such-route", headers=headers)
    await asyncio.sleep(0.2)
    assert rid in (stack.workdir / "llm.log").read_text()


async def test_after_logout_the_edge_refuses_the_access_token(stack) -> None:
    base = stack.url("gateway")
    async with httpx.AsyncClient(timeout=15) as client:
        _, tokens = await signup(client, base)
        await client.post(
            base + "/api/v1/auth/logout",
            json={"refresh_token": tokens["refresh_token"]},
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
        )
        resp = await eventually_401(client, base + "/api/v1/documents/x", tokens["access_token"])
    assert resp.status_code == 401


async def test_a_deleted_users_token_is_refused_at_the_edge(stack) -> None:
    base = stack.url("gateway")
    async with httpx.AsyncClient(timeout=15) as client:
        _, tokens = await signup(client, base)
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        gone = await client.request("DELETE", base + "/api/v1/auth/me", json={"password": PASSWORD}, headers=auth)
        assert gone.status_code == 204
        resp = await eventually_401(client, base + "/api/v1/llm/x", tokens["access_token"])
    assert resp.status_code == 401


async def test_forwarded_for_from_a_client_does_not_evade_the_address_limit(make_stack) -> None:
    st = await make_stack(("auth", "gateway"), env={"LOGIN_RATE_PER_ADDRESS": "3/minute"})
    base = st.url("gateway")
    async with httpx.AsyncClient(timeout=15) as client:
        address = email()
        await client.post(base + "/api/v1/auth/register", json={"email": address, "password": PASSWORD})
        codes = []
        for i in range(5):
            resp = await client.post(
                base + "/api/v1/auth/login",
                json={"email": address, "password": "wrong password!"},
                headers={"X-Forwarded-For": f"198.51.100.{i}"},
            )
            codes.append(resp.status_code)
        assert codes == [401, 401, 401, 429, 429]
        assert int(resp.headers["retry-after"]) >= 1
