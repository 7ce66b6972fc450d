"""The whole flow through the gateway, against the real processes (the `stack` fixture): register,
login, /me, refresh, logout; the gateway's edge check (a refusal there is the gateway's own 401: the
services' logs show the request never reached them); revocation seen at the edge; and the
per-address limit that a client cannot dodge with its own X-Forwarded-For."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.support.logs import reached, wait_for_log
from tests.support.users import PASSWORD, bearer, new_email, register_and_login
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e
BEHIND_THE_EDGE = ("auth", "documents", "llm")


async def refused_at_the_edge(client: httpx.AsyncClient, stack, path: str, token: str) -> httpx.Response:
    """``token`` on ``path`` through the gateway is refused by the gateway itself: a 401 that the
    services behind it never saw. Waited for, as verifiers without Redis read auth's revocation list
    every REVOCATION_POLL_SECONDS (1 s), so a revocation reaches the gateway within seconds."""

    async def attempt() -> tuple[httpx.Response, list[str] | None]:
        rid = f"edge-{secrets.token_hex(6)}"
        resp = await client.get(stack.url("gateway") + path, headers={**bearer(token), "X-Request-ID": rid})
        return resp, (await reached(stack, rid, BEHIND_THE_EDGE) if resp.status_code == 401 else None)

    resp, seen = await eventually(
        attempt, lambda answer: answer[0].status_code == 401 and answer[1] == [], what=f"{path} refused at the edge"
    )
    assert resp.status_code == 401 and seen == []
    assert resp.headers["www-authenticate"].startswith("Bearer")
    return resp


async def test_register_login_me_refresh_logout_through_the_gateway(stack) -> None:
    base = stack.url("gateway")
    async with httpx.AsyncClient(base_url=base, timeout=15) as client:
        address, tokens = await register_and_login(client)
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
    assert await reached(stack, rid, BEHIND_THE_EDGE) == []


async def test_the_gateway_refuses_a_garbage_or_forged_token_at_the_edge(stack) -> None:
    base = stack.url("gateway")
    async with httpx.AsyncClient(base_url=base, timeout=15) as client:
        _, tokens = await register_and_login(client)
        head, payload, _sig = tokens["access_token"].split(".")
        for token in ("garbage", f"{head}.{payload}.", tokens["refresh_token"]):
            resp = await refused_at_the_edge(client, stack, "/api/v1/documents/x", token)
            assert resp.status_code == 401


async def test_a_valid_token_passes_the_edge(stack) -> None:
    base = stack.url("gateway")
    rid = f"pass-{secrets.token_hex(6)}"
    async with httpx.AsyncClient(base_url=base, timeout=15) as client:
        _, tokens = await register_and_login(client)
        headers = {"Authorization": f"Bearer {tokens['access_token']}", "X-Request-ID": rid}
        await client.get(base + "/api/v1/llm/no-such-route", headers=headers)
    await wait_for_log(stack.workdir / "llm.log", rid)


async def test_after_logout_the_edge_refuses_the_access_token(stack) -> None:
    base = stack.url("gateway")
    async with httpx.AsyncClient(base_url=base, timeout=15) as client:
        _, tokens = await register_and_login(client)
        await client.post(
            base + "/api/v1/auth/logout",
            json={"refresh_token": tokens["refresh_token"]},
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
        )
        resp = await refused_at_the_edge(client, stack, "/api/v1/documents/x", tokens["access_token"])
    assert resp.status_code == 401


async def test_a_deleted_users_token_is_refused_at_the_edge(stack) -> None:
    base = stack.url("gateway")
    async with httpx.AsyncClient(base_url=base, timeout=15) as client:
        _, tokens = await register_and_login(client)
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        gone = await client.request("DELETE", base + "/api/v1/auth/me", json={"password": PASSWORD}, headers=auth)
        assert gone.status_code == 204
        resp = await refused_at_the_edge(client, stack, "/api/v1/llm/x", tokens["access_token"])
    assert resp.status_code == 401


async def test_forwarded_for_from_a_client_does_not_evade_the_address_limit(make_stack) -> None:
    st = await make_stack(("auth", "gateway"), env={"LOGIN_RATE_PER_ADDRESS": "3/minute"})
    base = st.url("gateway")
    async with httpx.AsyncClient(timeout=15) as client:
        address = new_email("e2e")
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
