"""Accounts through the auth API: register, log in, or both, on any client whose base URL reaches
the auth routes (the auth app in process, the auth service, or the gateway)."""

from __future__ import annotations

import secrets
from typing import Any

import httpx

PASSWORD = "correct horse battery staple"
REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"


def new_email(label: str = "user") -> str:
    return f"{label}-{secrets.token_hex(5)}@example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _registered(resp: httpx.Response, email: str) -> str:
    assert resp.status_code == 201, f"register {email}: {resp.status_code} {resp.text[:300]}"
    return email


def _logged_in(resp: httpx.Response, email: str) -> dict[str, Any]:
    assert resp.status_code == 200, f"login {email}: {resp.status_code} {resp.text[:300]}"
    return resp.json()


async def register(client: httpx.AsyncClient, email: str | None = None, password: str = PASSWORD) -> str:
    """A new account (201 or the test fails); returns its email."""
    email = email or new_email()
    return _registered(await client.post(REGISTER, json={"email": email, "password": password}), email)


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD, **kw: Any) -> dict[str, Any]:
    """The token pair of a successful login (200 or the test fails)."""
    return _logged_in(await client.post(LOGIN, json={"email": email, "password": password}, **kw), email)


async def register_and_login(
    client: httpx.AsyncClient, email: str | None = None, password: str = PASSWORD
) -> tuple[str, dict[str, Any]]:
    """A new account, logged in: (email, token pair)."""
    email = await register(client, email, password)
    return email, await login(client, email, password)


async def new_access_token(base_url: str, label: str = "user") -> str:
    """The access token of a new account registered and logged in through ``base_url``."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        _, tokens = await register_and_login(client, new_email(label))
    return tokens["access_token"]


def register_and_login_sync(
    client: httpx.Client, email: str | None = None, password: str = PASSWORD
) -> tuple[str, dict[str, Any]]:
    """``register_and_login`` for a synchronous client."""
    email = email or new_email()
    _registered(client.post(REGISTER, json={"email": email, "password": password}), email)
    return email, _logged_in(client.post(LOGIN, json={"email": email, "password": password}), email)
