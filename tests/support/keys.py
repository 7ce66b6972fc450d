"""API keys through the auth API (an access token makes and revokes them), on any base URL that
reaches the auth routes (the gateway or the auth service)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.users import bearer

KEYS = "/api/v1/auth/keys"


async def new_key(base_url: str, token: str, **body: Any) -> dict[str, Any]:
    """A new key of the token's account (201 or the test fails): its id, its ``key``, its limits."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        resp = await client.post(KEYS, json={"name": "test", **body}, headers=bearer(token))
    assert resp.status_code == 201, resp.text
    made: dict[str, Any] = resp.json()
    return made


async def revoke_key(base_url: str, token: str, key_id: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        resp = await client.delete(f"{KEYS}/{key_id}", headers=bearer(token))
    assert resp.status_code == 204, resp.text
