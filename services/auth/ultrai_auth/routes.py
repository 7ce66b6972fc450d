"""The auth API: accounts, login, refresh rotation, logout, password change, deletion, service tokens.

Handlers only translate between HTTP and the services (accounts.py, sessions.py); the dependencies
that build those services are in deps.py, and the browsers' session cookie is in cookies.py.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from shared.errors import ProblemError, problem_responses
from shared.tokens import unauthorized
from ultrai_auth.cookies import clear_refresh_cookie, presented_refresh_token, set_refresh_cookie
from ultrai_auth.deps import (
    AccessToken,
    Accounts,
    ClientAddress,
    CurrentUser,
    RefreshCookie,
    Repository,
    Revocations,
    Sessions,
    Settings,
    TokenSigner,
    require_internal_caller,
)
from ultrai_auth.schemas import (
    SERVICE_PATTERN,
    Account,
    Credentials,
    ErasuresDone,
    LogoutRequest,
    PasswordChange,
    PasswordConfirm,
    PendingErasures,
    RefreshRequest,
    Registration,
    ServiceToken,
    ServiceTokenRequest,
    TokenPair,
)
from ultrai_auth.sessions import INVALID_REFRESH
from ultrai_auth.settings import AuthSettings
from ultrai_auth.successors import Grant

PREFIX = "/api/v1/auth"
router = APIRouter(prefix=PREFIX, tags=["auth"])
wellknown = APIRouter(tags=["keys"])

# What ``GET /`` and ``GET /api/v1/auth`` list.
DIRECTORY = {
    PREFIX: "this directory",
    f"{PREFIX}/register": "POST email and password: create an account",
    f"{PREFIX}/login": "POST email and password: access and refresh tokens (cookie: true puts the latter in a cookie)",
    f"{PREFIX}/refresh": "POST refresh_token, or the session cookie: new tokens (the old refresh token is spent)",
    f"{PREFIX}/logout": "POST refresh_token, or the session cookie: end the session",
    f"{PREFIX}/me": "GET the current account; DELETE it (with the password)",
    f"{PREFIX}/password": "POST current_password and new_password: change it (ends every session)",
    f"{PREFIX}/service-token": "POST (internal): a short-lived service token",
    f"{PREFIX}/erasures": "GET (internal): deleted accounts a service has still to erase; POST .../done when it has",
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
    summary=(
        "Delete the account (confirm with the password): every token of it stops working, and its"
        " documents, analyses, usage and conversations are erased"
    ),
    responses=problem_responses(401, 422, 503),
)
async def delete_account(body: PasswordConfirm, user: CurrentUser, accounts: Accounts) -> Response:
    await accounts.delete(user, body.password)
    return Response(status_code=204)


# ---- sessions ---------------------------------------------------------------------------------
def token_answer(grant: Grant, response: Response, settings: AuthSettings, *, cookie: bool) -> TokenPair:
    """The tokens as answered: the refresh token in the body, or only in the session cookie."""
    if cookie:
        set_refresh_cookie(response, grant, settings)
        return TokenPair(access_token=grant.access_token, expires_in=grant.expires_in)
    return TokenPair(access_token=grant.access_token, refresh_token=grant.refresh_token, expires_in=grant.expires_in)


@router.post(
    "/login",
    response_model=TokenPair,
    response_model_exclude_none=True,
    summary="Log in: an access token and a refresh token (in the answer, or with cookie: true in a cookie)",
    responses=problem_responses(401, 422, 429, 503),
)
async def login(
    body: Credentials, response: Response, address: ClientAddress, accounts: Accounts, settings: Settings
) -> TokenPair:
    grant = await accounts.log_in(body.email, body.password, address)
    return token_answer(grant, response, settings, cookie=body.cookie)


@router.post(
    "/refresh",
    response_model=TokenPair,
    response_model_exclude_none=True,
    summary="Exchange a refresh token (the body's, or the session cookie's) for new tokens (rotation; "
    "reuse past the reuse interval ends the session)",
    responses=problem_responses(401, 403, 422),
)
async def refresh(
    response: Response,
    sessions: Sessions,
    cookie: RefreshCookie,
    settings: Settings,
    # No body at all is an empty one (a browser's refresh sends only the cookie).
    body: RefreshRequest = RefreshRequest(),
) -> TokenPair:
    token, from_cookie = presented_refresh_token(body.refresh_token, cookie)
    if token is None:
        raise unauthorized(INVALID_REFRESH)
    grant = await sessions.rotate(token)
    # A token that came from the cookie goes back there: it never reaches the page's script.
    return token_answer(grant, response, settings, cookie=body.cookie or from_cookie)


@router.post(
    "/logout",
    status_code=204,
    summary="End the session of a refresh token (the body's, or the session cookie's, which is cleared) "
    "and of the access token sent with it",
    responses=problem_responses(403, 422),
)
async def logout(
    access_token: AccessToken,
    sessions: Sessions,
    cookie: RefreshCookie,
    settings: Settings,
    body: LogoutRequest = LogoutRequest(),
) -> Response:
    token, _ = presented_refresh_token(body.refresh_token, cookie)
    await sessions.end(token, access_token)
    # The same answer whether or not the token was known; the browser drops its cookie either way.
    response = Response(status_code=204)
    clear_refresh_cookie(response, settings)
    return response


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


# ---- internal: deleted accounts the other services have still to erase --------------------------
def erasing_service(service: str, settings: AuthSettings) -> str:
    if service not in settings.erasure_services:
        raise ProblemError(
            422, f"Invalid request: service: {service!r} is not in ERASURE_SERVICES.", title="Validation failed"
        )
    return service


@router.get(
    "/erasures",
    response_model=PendingErasures,
    summary="Deleted accounts whose data a service has still to erase (internal; Bearer INTERNAL_TOKEN_SECRET)",
    responses=problem_responses(401, 422),
    dependencies=[Depends(require_internal_caller)],
)
async def pending_erasures(
    repository: Repository,
    settings: Settings,
    service: Annotated[str, Query(pattern=SERVICE_PATTERN)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> PendingErasures:
    names = await repository.pending_erasures(erasing_service(service, settings), limit, time.time())
    return PendingErasures(user_ids=names)


@router.post(
    "/erasures/done",
    status_code=204,
    summary="A service has erased what it held of these deleted accounts (internal; Bearer INTERNAL_TOKEN_SECRET)",
    responses=problem_responses(401, 422),
    dependencies=[Depends(require_internal_caller)],
)
async def erasures_done(body: ErasuresDone, repository: Repository, settings: Settings) -> Response:
    service = erasing_service(body.service, settings)
    await repository.erasures_done(service, body.user_ids, time.time(), settings.erasure_repeat_seconds)
    await repository.commit()
    return Response(status_code=204)


# ---- keys -------------------------------------------------------------------------------------
@wellknown.get("/.well-known/jwks.json", summary="The public keys that verify our tokens")
async def jwks(response: Response, signer: TokenSigner) -> dict[str, Any]:
    response.headers["Cache-Control"] = "public, max-age=300"
    return signer.jwks()
