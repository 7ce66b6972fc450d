"""Browsers' sessions (IETF OAuth 2.0 for Browser-Based Applications): with ``cookie: true`` the
refresh token travels in a ``__Secure-`` HttpOnly cookie limited to the auth routes and never in the
answer; a request that presents only the cookie needs an allowed Origin (CSRF), and logout clears it.
The JSON flow of other clients is unchanged."""

from __future__ import annotations

import logging
import time

from sqlalchemy import update

from tests.auth.browser import (
    COOKIE,
    LOGIN,
    LOGOUT,
    ME,
    ORIGIN,
    REFRESH,
    browser,
    cookie_login,
    cookie_value,
    set_cookie,
    used_at,
)
from tests.support.users import PASSWORD, bearer, login, register, register_and_login
from ultrai_auth.models import Session

TTL = 86_400
FOREIGN = "https://evil.example"


def assert_session_cookie(resp, *, max_age_at_most: int, max_age_at_least: int, samesite: str = "Lax") -> str:
    value, attributes = set_cookie(resp)
    assert value
    max_age = int(attributes.pop("Max-Age"))
    assert max_age_at_least <= max_age <= max_age_at_most, max_age
    assert attributes == {"Path": "/api/v1/auth", "Secure": True, "HttpOnly": True, "SameSite": samesite}
    return value


async def test_login_with_cookie_puts_the_refresh_token_in_the_cookie_only(auth_client) -> None:
    async with auth_client(refresh_token_ttl_seconds=TTL) as client:
        email = await register(client)
        resp = await cookie_login(client, email, PASSWORD)
        # Max-Age is the refresh token's lifetime (whole seconds, counted from the login).
        token = assert_session_cookie(resp, max_age_at_most=TTL, max_age_at_least=TTL - 60)
        assert set(resp.json()) == {"access_token", "token_type", "expires_in"}
        assert token not in resp.text
        assert resp.headers["cache-control"] == "no-store"
        assert (await client.get(ME, headers=bearer(resp.json()["access_token"]))).status_code == 200
        assert await used_at(client, token) is None  # a live refresh token of the session

        # Other clients: the JSON flow is as it was, with no cookie.
        for body in ({"email": email, "password": PASSWORD}, {"email": email, "password": PASSWORD, "cookie": False}):
            plain = await client.post(LOGIN, json=body)
            assert plain.status_code == 200
            assert set(plain.json()) == {"access_token", "refresh_token", "token_type", "expires_in"}
            assert "set-cookie" not in plain.headers


async def test_samesite_follows_the_setting_and_secure_is_always_set(auth_client) -> None:
    for setting, written in (("strict", "Strict"), ("none", "None")):
        async with auth_client(refresh_cookie_samesite=setting, refresh_token_ttl_seconds=TTL) as client:
            email = await register(client)
            resp = await cookie_login(client, email, PASSWORD)
            assert_session_cookie(resp, max_age_at_most=TTL, max_age_at_least=TTL - 60, samesite=written)


async def test_refresh_from_the_cookie_with_an_allowed_origin(auth_client) -> None:
    async with auth_client() as client:
        email = await register(client)
        old = cookie_value(await cookie_login(client, email, PASSWORD))
        # The cookie's Max-Age is what is left of the session, not a fresh lifetime.
        async with client.app.state.db.sessions() as db:
            await db.execute(update(Session).values(expires_at=time.time() + 1000))
            await db.commit()
        resp = await client.post(REFRESH, headers=browser(old))
        assert resp.status_code == 200, resp.text
        new = assert_session_cookie(resp, max_age_at_most=1000, max_age_at_least=940)
        assert new != old
        assert set(resp.json()) == {"access_token", "token_type", "expires_in"}
        assert await used_at(client, old) is not None  # the old one is spent
        assert await used_at(client, new) is None
        assert (await client.get(ME, headers=bearer(resp.json()["access_token"]))).status_code == 200
        # An empty JSON body is the same as none.
        again = await client.post(REFRESH, json={}, headers=browser(new))
        assert again.status_code == 200 and "refresh_token" not in again.json()
        assert cookie_value(again) not in (old, new)


async def test_cookie_refresh_without_an_allowed_origin_is_refused_and_spends_nothing(auth_client) -> None:
    async with auth_client() as client:
        email = await register(client)
        token = cookie_value(await cookie_login(client, email, PASSWORD))
        refusals = [
            await client.post(REFRESH, headers=browser(token, origin=None)),
            await client.post(REFRESH, headers=browser(token, origin=FOREIGN)),
            await client.post(REFRESH, headers=browser(token, origin="null")),
            await client.post(REFRESH, headers=browser(token, origin=ORIGIN + ".evil.example")),
            await client.post(REFRESH, json={"cookie": True}, headers=browser(token, origin=FOREIGN)),
        ]
        for resp in refusals:
            assert resp.status_code == 403, resp.text
            assert resp.headers["content-type"] == "application/problem+json"
            assert "set-cookie" not in resp.headers
            assert token not in resp.text
        assert await used_at(client, token) is None
        later = await client.post(REFRESH, headers=browser(token))
        assert later.status_code == 200


async def test_origins_matching_the_regex_are_allowed_in_full_only(auth_client) -> None:
    regex = r"https://ultrai-[a-z0-9-]+\.vercel\.app"
    async with auth_client(cors_origins="https://app.ultrai.example", cors_origin_regex=regex) as client:
        email = await register(client)
        token = cookie_value(await cookie_login(client, email, PASSWORD))
        for origin in ("https://ultrai-pr-7.vercel.app.evil.example", "http://localhost:5173"):
            assert (await client.post(REFRESH, headers=browser(token, origin=origin))).status_code == 403
        resp = await client.post(REFRESH, headers=browser(token, origin="https://ultrai-pr-7.vercel.app"))
        assert resp.status_code == 200
        listed = await client.post(REFRESH, headers=browser(cookie_value(resp), origin="https://app.ultrai.example"))
        assert listed.status_code == 200


async def test_a_body_token_wins_over_the_cookie_and_needs_no_origin(auth_client) -> None:
    async with auth_client() as client:
        email, tokens = await register_and_login(client)
        cookie = cookie_value(await cookie_login(client, email, PASSWORD))
        resp = await client.post(
            REFRESH, json={"refresh_token": tokens["refresh_token"]}, headers=browser(cookie, origin=FOREIGN)
        )
        assert resp.status_code == 200
        assert "refresh_token" in resp.json() and "set-cookie" not in resp.headers
        assert await used_at(client, tokens["refresh_token"]) is not None
        assert await used_at(client, cookie) is None
        # A body token with cookie: true moves the session into the cookie.
        moved = await client.post(REFRESH, json={"refresh_token": resp.json()["refresh_token"], "cookie": True})
        assert moved.status_code == 200 and "refresh_token" not in moved.json()
        assert (await client.post(REFRESH, headers=browser(cookie_value(moved)))).status_code == 200


async def test_refresh_with_no_token_at_all_is_401(auth_client) -> None:
    async with auth_client() as client:
        for kw in ({}, {"json": {}}, {"json": {"cookie": True}}, {"headers": browser(None)}):
            resp = await client.post(REFRESH, **kw)
            assert resp.status_code == 401, (kw, resp.text)
            assert resp.headers["content-type"] == "application/problem+json"


async def test_logout_from_the_cookie_clears_it_and_ends_the_session(auth_client) -> None:
    async with auth_client() as client:
        email = await register(client)
        resp = await cookie_login(client, email, PASSWORD)
        token, access = cookie_value(resp), resp.json()["access_token"]
        out = await client.post(LOGOUT, headers=browser(token))
        assert out.status_code == 204
        value, attributes = set_cookie(out)
        assert value == ""
        assert attributes == {
            "Max-Age": "0",
            "Path": "/api/v1/auth",
            "Secure": True,
            "HttpOnly": True,
            "SameSite": "Lax",
        }
        # The session ended: its access token and its refresh token are refused.
        assert (await client.get(ME, headers=bearer(access))).status_code == 401
        assert (await client.post(REFRESH, headers=browser(token))).status_code == 401


async def test_cookie_logout_without_an_allowed_origin_is_refused_and_ends_nothing(auth_client) -> None:
    async with auth_client() as client:
        email = await register(client)
        resp = await cookie_login(client, email, PASSWORD)
        token, access = cookie_value(resp), resp.json()["access_token"]
        for origin in (None, FOREIGN):
            out = await client.post(LOGOUT, headers=browser(token, origin=origin))
            assert out.status_code == 403 and out.headers["content-type"] == "application/problem+json"
            assert "set-cookie" not in out.headers
        assert (await client.get(ME, headers=bearer(access))).status_code == 200
        assert (await client.post(REFRESH, headers=browser(token))).status_code == 200


async def test_every_logout_clears_the_cookie(auth_client) -> None:
    async with auth_client() as client:
        email = await register(client)
        tokens = await login(client, email)
        for kw in ({"json": {"refresh_token": tokens["refresh_token"]}}, {}, {"json": {"refresh_token": "unknown"}}):
            out = await client.post(LOGOUT, **kw)
            assert out.status_code == 204
            assert set_cookie(out)[1]["Max-Age"] == "0"
        assert (await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})).status_code == 401


class Raw(logging.Handler):
    """Every record as the code wrote it, before the redacting filter of shared.logs runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def test_the_cookie_never_reaches_a_log_line_or_an_error_body(auth_client, capsys) -> None:
    raw = Raw()
    seen: list[str] = []
    bodies: list[str] = []
    # No reuse interval: the replay below is reuse, and is logged as such.
    async with auth_client(log_level="DEBUG", refresh_reuse_interval_seconds=0) as client:
        logging.getLogger().handlers.insert(0, raw)
        try:
            email = await register(client)
            first = cookie_value(await cookie_login(client, email, PASSWORD))
            seen.append(first)
            for origin in (None, FOREIGN):
                bodies.append((await client.post(REFRESH, headers=browser(first, origin=origin))).text)
            rotated = await client.post(REFRESH, headers=browser(first))
            second = cookie_value(rotated)
            seen.append(second)
            bodies.append((await client.post(REFRESH, headers=browser(first))).text)  # reuse: 401
            bodies.append((await client.post(LOGOUT, headers=browser(second, origin=FOREIGN))).text)
            await client.post(LOGOUT, headers=browser(second))
            bodies.append((await client.post(REFRESH, headers=browser(second))).text)
            # A malformed body next to the cookie: the validation error names the body, not the cookie.
            bodies.append((await client.post(REFRESH, json={"cookie": "yes please"}, headers=browser(second))).text)
        finally:
            logging.getLogger().removeHandler(raw)
    written = capsys.readouterr().err
    assert len(bodies) == 6 and all(body for body in bodies)
    for text in ("\n".join(raw.messages), written, "\n".join(bodies)):
        for secret in seen:
            assert secret not in text
            assert secret[:16] not in text
    for text in ("\n".join(raw.messages), written):
        assert "refresh token reuse" in text  # the capture works: the reuse warning is there
        assert COOKIE not in text
