"""A browser's session through the gateway, against the real processes (the `stack` fixture): the
session cookie, its Origin check and the reuse interval work with the gateway's proxy in between
(Set-Cookie comes back, Cookie and Origin go through)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.auth.browser import LOGOUT, ME, REFRESH, browser, cookie_login, cookie_value, set_cookie
from tests.support.users import PASSWORD, bearer, register

pytestmark = pytest.mark.e2e


async def test_cookie_login_refresh_and_logout_through_the_gateway(stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=15) as client:
        email = await register(client)
        login = await cookie_login(client, email, PASSWORD)
        token = cookie_value(login)
        assert "refresh_token" not in login.json()
        refused = await client.post(REFRESH, headers=browser(token, origin="https://evil.example"))
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        # Two tabs at once: the same successor for both.
        tabs = await asyncio.gather(*(client.post(REFRESH, headers=browser(token)) for _ in range(2)))
        assert [r.status_code for r in tabs] == [200, 200], [r.text for r in tabs]
        successor = cookie_value(tabs[0])
        assert cookie_value(tabs[1]) == successor != token
        for tab in tabs:
            assert (await client.get(ME, headers=bearer(tab.json()["access_token"]))).status_code == 200
        out = await client.post(LOGOUT, headers=browser(successor))
        assert out.status_code == 204 and set_cookie(out)[1]["Max-Age"] == "0"
        assert (await client.post(REFRESH, headers=browser(successor))).status_code == 401
