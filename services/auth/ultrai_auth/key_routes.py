"""The API key routes: ``/api/v1/auth/keys`` (an access token only: a key cannot make keys), and the
internal resolution and spend endpoints the other services call (Bearer INTERNAL_TOKEN_SECRET)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from shared.errors import problem_responses
from ultrai_auth.apikeys import KeySpec
from ultrai_auth.deps import CurrentUser, Keys, require_internal_caller
from ultrai_auth.key_schemas import KeyCreate, KeyGrantOut, KeyInfo, KeyList, KeyOfUser, KeyResolve, KeySpend, NewKey
from ultrai_auth.routes import PREFIX

router = APIRouter(prefix=f"{PREFIX}/keys", tags=["keys"])

DIRECTORY = {
    f"{PREFIX}/keys": "POST a name (scopes, expiry, limits): a new API key, shown once; GET: the keys",
    f"{PREFIX}/keys/{{id}}": "DELETE: revoke the key",
    f"{PREFIX}/keys/{{id}}/rotate": "POST: a new key in place of this one (which is revoked)",
}


@router.post(
    "",
    status_code=201,
    response_model=NewKey,
    summary="Create an API key (the key is in the answer, this once)",
    responses=problem_responses(401, 409, 422),
)
async def create_key(body: KeyCreate, user: CurrentUser, keys: Keys) -> NewKey:
    spec = KeySpec(body.name, tuple(body.scopes or ()), body.expires_in_days, body.budget_usd, body.rpm, body.tpm)
    row, key = await keys.create(user.id, spec)
    return NewKey(**KeyInfo.of(row).model_dump(), key=key)


@router.get(
    "",
    response_model=KeyList,
    summary="The account's API keys (never the keys themselves)",
    responses=problem_responses(401),
)
async def list_keys(user: CurrentUser, keys: Keys) -> KeyList:
    return KeyList(keys=[KeyInfo.of(k) for k in await keys.listing(user.id)])


@router.delete(
    "/{key_id}",
    status_code=204,
    summary="Revoke an API key; every service refuses it within a second or two",
    responses=problem_responses(401, 404),
)
async def revoke_key(key_id: str, user: CurrentUser, keys: Keys) -> Response:
    await keys.revoke(user.id, key_id)
    return Response(status_code=204)


@router.post(
    "/{key_id}/rotate",
    status_code=201,
    response_model=NewKey,
    summary="Replace an API key with a new one (same name, scopes, expiry and limits); the old one is revoked",
    responses=problem_responses(401, 404),
)
async def rotate_key(key_id: str, user: CurrentUser, keys: Keys) -> NewKey:
    row, key = await keys.rotate(user.id, key_id)
    return NewKey(**KeyInfo.of(row).model_dump(), key=key)


@router.post(
    "/resolve",
    response_model=KeyGrantOut,
    summary="What a key hash allows (internal; Bearer INTERNAL_TOKEN_SECRET)",
    responses=problem_responses(401, 422, 429),
    dependencies=[Depends(require_internal_caller)],
)
async def resolve_key(body: KeyResolve, keys: Keys) -> dict[str, Any]:
    return (await keys.resolve(body.hash, body.address)).to_json()


@router.post(
    "/grant",
    response_model=KeyGrantOut,
    summary="What a user's key allows, by its id (internal; Bearer INTERNAL_TOKEN_SECRET)",
    responses=problem_responses(401, 422),
    dependencies=[Depends(require_internal_caller)],
)
async def key_grant(body: KeyOfUser, keys: Keys) -> dict[str, Any]:
    return (await keys.grant(body.key_id, body.user_id)).to_json()


@router.post(
    "/spend",
    status_code=204,
    summary="Add what keys spent (internal; the llm service reports it)",
    responses=problem_responses(401, 422),
    dependencies=[Depends(require_internal_caller)],
)
async def add_spend(body: KeySpend, keys: Keys) -> Response:
    await keys.add_spend(body.spend)
    return Response(status_code=204)
