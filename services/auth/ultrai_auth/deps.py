"""The auth routes' dependencies: what the lifespan opened (on ``app.state``), the services built on
the request's database session, the caller's address, and who is calling."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Cookie, Depends, Request

from shared.app import state_dependency
from shared.kv import KeyValue
from shared.net import client_address
from shared.ratelimit import RateLimiter
from shared.tokens import CurrentPrincipal, TokenVerifier, bearer_token, unauthorized
from ultrai_auth.accounts import AccountService
from ultrai_auth.apikeys import KeyService
from ultrai_auth.cookies import REFRESH_COOKIE, CookieCredential
from ultrai_auth.key_repository import KeyRepository
from ultrai_auth.keys import Signer
from ultrai_auth.models import User
from ultrai_auth.passwords import PasswordService
from ultrai_auth.repository import AuthRepository
from ultrai_auth.revocation import Revoker
from ultrai_auth.sessions import SessionService
from ultrai_auth.settings import AuthSettings
from ultrai_auth.successors import Successors
from ultrai_auth.throttle import LoginThrottle

# ---- what the app and its lifespan hold -------------------------------------------------------
Settings = Annotated[AuthSettings, Depends(state_dependency("settings", AuthSettings))]
TokenSigner = Annotated[Signer, Depends(state_dependency("signer", Signer))]
Passwords = Annotated[PasswordService, Depends(state_dependency("passwords", PasswordService))]
Limiter = Annotated[RateLimiter, Depends(state_dependency("limiter", RateLimiter))]
Revocations = Annotated[Revoker, Depends(state_dependency("revoker", Revoker))]
Verifier = Annotated[TokenVerifier, Depends(state_dependency("verifier", TokenVerifier))]
KeyValueStore = Annotated[KeyValue, Depends(state_dependency("kv", KeyValue))]


# ---- the services, on the request's database session ------------------------------------------
Repository = Annotated[AuthRepository, Depends(AuthRepository.on_request)]


async def get_throttle(limiter: Limiter, kv: KeyValueStore, settings: Settings) -> LoginThrottle:
    return LoginThrottle(limiter, kv, settings)


Throttle = Annotated[LoginThrottle, Depends(get_throttle)]


async def get_sessions(
    repository: Repository,
    signer: TokenSigner,
    revoker: Revocations,
    verifier: Verifier,
    settings: Settings,
    kv: KeyValueStore,
) -> SessionService:
    successors = Successors(kv, settings.refresh_reuse_interval_seconds)
    return SessionService(repository, signer, revoker, verifier, settings, successors)


Sessions = Annotated[SessionService, Depends(get_sessions)]


async def get_accounts(
    repository: Repository,
    passwords: Passwords,
    sessions: Sessions,
    throttle: Throttle,
    revoker: Revocations,
    settings: Settings,
) -> AccountService:
    return AccountService(repository, passwords, sessions, throttle, revoker, settings)


Accounts = Annotated[AccountService, Depends(get_accounts)]


# ---- the caller -------------------------------------------------------------------------------
async def get_client_address(request: Request, settings: Settings) -> str:
    """The client's address: X-Forwarded-For is believed only from TRUSTED_PROXIES."""
    return client_address(request.scope, settings.proxies)


ClientAddress = Annotated[str, Depends(get_client_address)]
AccessToken = Annotated[str | None, Depends(bearer_token)]


async def cookie_credential(
    request: Request,
    settings: Settings,
    token: Annotated[
        str | None,
        Cookie(
            alias=REFRESH_COOKIE,
            title="Session cookie",
            description="The refresh token set with cookie: true (browsers; needs an allowed Origin).",
        ),
    ] = None,
) -> CookieCredential:
    """The session cookie's refresh token, and whether the request's Origin may use it."""
    return CookieCredential(token or None, settings.origin_allowed(request.headers.get("origin")))


RefreshCookie = Annotated[CookieCredential, Depends(cookie_credential)]


async def authenticated_user(principal: CurrentPrincipal, sessions: Sessions) -> User:
    """The current user: a verified access token whose session and account still exist."""
    return await sessions.user_of(principal)


CurrentUser = Annotated[User, Depends(authenticated_user)]


async def require_internal_caller(request: Request, settings: Settings) -> None:
    """Only callers holding INTERNAL_TOKEN_SECRET (as a Bearer token) get through."""
    token = bearer_token(request) or ""
    expected = settings.internal_token_secret.get_secret_value()
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise unauthorized("A valid internal credential is required.")


# ---- API keys ---------------------------------------------------------------------------------
async def get_keys(
    repository: Annotated[KeyRepository, Depends(KeyRepository.on_request)],
    revoker: Revocations,
    limiter: Limiter,
    settings: Settings,
) -> KeyService:
    return KeyService(repository, revoker, limiter, settings)


Keys = Annotated[KeyService, Depends(get_keys)]
