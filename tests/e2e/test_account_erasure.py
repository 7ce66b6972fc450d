"""Deleting an account, through the gateway, erases what documents and llm hold of it: each service
hears of it from auth, deletes its rows and reports it, and auth forgets the deletion."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from shared.db import Database
from shared.settings import DEV_INTERNAL_TOKEN_SECRET, DatabaseSettings
from tests.support.users import PASSWORD, bearer, register_and_login
from tests.support.waiting import eventually
from tools.stack import Stack
from ultrai_documents.models import Document, DocumentText
from ultrai_llm.models import Conversation

pytestmark = pytest.mark.e2e


async def rows(stack: Stack, service: str, query) -> int:
    """A count read straight from one service's database in the stack (its schema or its file)."""
    settings = DatabaseSettings(
        environment="test", data_dir=stack.env["DATA_DIR"], database_url=stack.env.get("DATABASE_URL")
    )
    db = Database(settings, service)
    try:
        async with db.sessions() as session:
            return int(await session.scalar(query) or 0)
    finally:
        await db.dispose()


async def test_a_deleted_account_leaves_nothing_in_documents_or_llm(stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=30) as client:
        _, tokens = await register_and_login(client)
        me = bearer(tokens["access_token"])
        user_id = (await client.get("/api/v1/auth/me", headers=me)).json()["id"]
        _, other_tokens = await register_and_login(client)
        other = bearer(other_tokens["access_token"])
        for headers in (me, other):
            text = ("a line of the document " * 50).encode()
            up = await client.post("/api/v1/documents", headers=headers, files={"file": ("a.txt", text, "text/plain")})
            assert up.status_code == 201, up.text
            made = await client.post("/api/v1/llm/conversations", headers=headers, json={"title": "kept?"})
            assert made.status_code == 201, made.text
        other_id = (await client.get("/api/v1/auth/me", headers=other)).json()["id"]

        owned = select(func.count()).where(Document.owner_id == user_id)
        texts = select(func.count()).where(
            DocumentText.document_id.in_(select(Document.id).where(Document.owner_id == user_id))
        )
        talks = select(func.count()).where(Conversation.user_id == user_id)
        assert (await rows(stack, "documents", owned), await rows(stack, "documents", texts)) == (1, 1)
        assert await rows(stack, "llm", talks) == 1

        gone = await client.request("DELETE", "/api/v1/auth/me", json={"password": PASSWORD}, headers=me)
        assert gone.status_code == 204

    internal = bearer(DEV_INTERNAL_TOKEN_SECRET)
    async with httpx.AsyncClient(base_url=stack.url("auth"), timeout=10) as auth:

        async def still_listed() -> dict[str, list[str]]:
            listed = {}
            for service in ("documents", "llm"):
                resp = await auth.get("/api/v1/auth/erasures", params={"service": service}, headers=internal)
                listed[service] = [u for u in resp.json()["user_ids"] if u == user_id]
            return listed

        await eventually(still_listed, lambda listed: not any(listed.values()), what="both services report the erasure")
    assert await rows(stack, "documents", owned) == 0
    assert await rows(stack, "documents", texts) == 0
    assert await rows(stack, "llm", talks) == 0
    # The other account's data is untouched.
    assert await rows(stack, "documents", select(func.count()).where(Document.owner_id == other_id)) == 1
    assert await rows(stack, "llm", select(func.count()).where(Conversation.user_id == other_id)) == 1
