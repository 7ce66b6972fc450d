"""The auth API: accounts, login, refresh rotation, logout, password change, deletion, service tokens.

Handlers only translate between HTTP and the services (accounts.py, sessions.py); the dependencies
that build those services are in deps.py.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from shared.errors import problem_responses
from ultrai_auth.deps import (
    AccessToken,
    Accounts,
    ClientAddress,
    CurrentUser,
    Revocations,
    Sessions,
    Settings,
    TokenSigner,
    require_internal_caller,
)
from ultrai_auth.schemas import (
    Account,
    Credentials,
    PasswordChange,
    PasswordConfirm,
    RefreshRequest,
    Registration,
    ServiceToken,
    ServiceTokenRequest,
    TokenPair,
)

PREFIX = "/api/v1/auth"
router = APIRouter(prefix=PREFIX, tags=["auth"])
wellknown = APIRouter(tags=["keys"])

# What ``GET /`` and ``GET /api/v1/auth`` list.
DIRECTORY = {
    PREFIX: "this directory",
    f"{PREFIX}/register": "POST email and password: create an account",
    f"{PREFIX}/login": "POST email and password: access and refresh tokens",
    f"{PREFIX}/refresh": "POST refresh_token: new tokens (the old refresh token is spent)",
    f"{PREFIX}/logout": "POST refresh_token: end the session",
    f"{PREFIX}/me": "GET the current account; DELETE it (with the password)",
    f"{PREFIX}/password": "POST current_password and new_password: change it (ends every session)",
    f"{PREFIX}/service-token": "POST (internal): a short-lived service token",
    "/.well-known/jwks.json": "the public signing keys",
}


# ---- accounts ---------------------------------------------------------------------------------
@router.post(
    "/register",
    status_code=201,
    response_model=Account,
    summary="Create an account",
    responses=problem_responses(409, 422, 429, 503),
)
async def register(body: Registration, address: ClientAddress, accounts: Accounts) -> Account:
    return Account.of(await accounts.register(body.email, body.password, address))


@router.get("/me", response_model=Account, summary="The current account", responses=problem_responses(401))
async def me(user: CurrentUser) -> Account:
    return Account.of(user)


@router.post(
    "/password",
    status_code=204,
    summary="Change the password; every session of the account ends",
    responses=problem_responses(401, 422, 429, 503),
)
async def change_password(body: PasswordChange, user: CurrentUser, accounts: Accounts) -> Response:
    await accounts.change_password(user, body.current_password, body.new_password)
    return Response(status_code=204)


@router.delete(
    "/me",
    status_code=204,
    summary="Delete the account (confirm with the password); every token of it stops working",
    responses=problem_responses(401, 422, 503),
)
async def delete_account(body: PasswordConfirm, user: CurrentUser, accounts: Accounts) -> Response:
    await accounts.delete(user, body.password)
    return Response(status_code=204)


# ---- sessions ---------------------------------------------------------------------------------
@router.post(
    "/login",
    response_model=TokenPair,
    summary="Log in: an access token and a refresh token",
    responses=problem_responses(401, 422, 429, 503),
)
async def login(body: Credentials, address: ClientAddress, accounts: Accounts) -> TokenPair:
    return await accounts.log_in(body.email, body.password, address)


@router.post(
    "/refresh",
    response_model=TokenPair,
    summary="Exchange a refresh token for new tokens (rotation; reuse ends the session)",
    responses=problem_responses(401, 422),
)
async def refresh(body: RefreshRequest, sessions: Sessions) -> TokenPair:
    return await sessions.rotate(body.refresh_token)


@router.post(
    "/logout",
    status_code=204,
    summary="End the session of a refresh token (and of the access token sent with it)",
    responses=problem_responses(422),
)
async def logout(body: RefreshRequest, access_token: AccessToken, sessions: Sessions) -> Response:
    await sessions.end(body.refresh_token, access_token)
    # The same answer whether or not the token was known.
    return Response(status_code=204)


# ---- internal: service tokens and the revocation list ------------------------------------------
@router.post(
    "/service-token",
    response_model=ServiceToken,
    summary="A short-lived token for a service to call another (internal; Bearer INTERNAL_TOKEN_SECRET)",
    responses=problem_responses(401, 422),
    dependencies=[Depends(require_internal_caller)],
)
async def service_token(body: ServiceTokenRequest, signer: TokenSigner, settings: Settings) -> ServiceToken:
    token, _ = signer.service_token(body.service, body.audience)
    return ServiceToken(access_token=token, expires_in=settings.service_token_ttl_seconds)


@router.get(
    "/revocations",
    summary="Revocations still in force (internal; what verifiers poll when there is no shared Redis)",
    responses=problem_responses(401),
    dependencies=[Depends(require_internal_caller)],
)
async def revocations(revoker: Revocations) -> dict[str, Any]:
    return revoker.listing()


# ---- keys -------------------------------------------------------------------------------------
@wellknown.get("/.well-known/jwks.json", summary="The public keys that verify our tokens")
async def jwks(response: Response, signer: TokenSigner) -> dict[str, Any]:
    response.headers["Cache-Control"] = "public, max-age=300"
    return signer.jwks()
