"""What a browser does with the auth service's session cookie, for the tests: read Set-Cookie, send
the cookie back with an Origin, and look up a refresh token's row."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from ultrai_auth.models import RefreshToken
from ultrai_auth.sessions import token_hash

COOKIE = "__Secure-ultrai-refresh"
# One of the origins AuthSettings allows by default (the gateway's defaults).
ORIGIN = "http://localhost:5173"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
ME = "/api/v1/auth/me"


def set_cookie(resp: httpx.Response) -> tuple[str, dict[str, str | bool]]:
    """The one Set-Cookie of ``resp`` for the session cookie: its value and its attributes (name as
    written -> value, or True for a flag)."""
    headers = [h for h in resp.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}=")]
    assert len(headers) == 1, resp.headers.get_list("set-cookie")
    first, *rest = [part.strip() for part in headers[0].split(";")]
    attributes: dict[str, str | bool] = {}
    for part in rest:
        name, eq, value = part.partition("=")
        attributes[name] = value if eq else True
    return first.split("=", 1)[1], attributes


def cookie_value(resp: httpx.Response) -> str:
    return set_cookie(resp)[0]


def browser(token: str | None, origin: str | None = ORIGIN) -> dict[str, str]:
    """The headers a browser sends with a request carrying the cookie (no Origin when ``origin`` is None)."""
    headers = {}
    if token is not None:
        headers["Cookie"] = f"{COOKIE}={token}"
    if origin is not None:
        headers["Origin"] = origin
    return headers


async def cookie_login(client: httpx.AsyncClient, email: str, password: str, **kw: Any) -> httpx.Response:
    resp = await client.post(
        LOGIN, json={"email": email, "password": password, "cookie": True}, headers=browser(None), **kw
    )
    assert resp.status_code == 200, resp.text
    return resp


async def used_at(client: httpx.AsyncClient, token: str) -> float | None:
    """When the refresh token ``token`` was spent (None: not yet)."""
    digest = token_hash(token)
    async with client.app.state.db.sessions() as db:
        row = await db.execute(select(RefreshToken.used_at).where(RefreshToken.token_hash == digest))
        return row.scalar_one()
