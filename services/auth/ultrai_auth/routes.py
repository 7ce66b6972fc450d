"""The auth API: accounts, login, refresh rotation, logout, password change, deletion, service tokens."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import ProblemError, problem_responses
from shared.net import client_address
from shared.ratelimit import Decision
from shared.tokens import Principal, bearer_token, current_user, unauthorized
from ultrai_auth.models import RefreshToken, Session, User
from ultrai_auth.passwords import MAX_PASSWORD_CHARS, policy_problems
from ultrai_auth.settings import AuthSettings

PREFIX = "/api/v1/auth"
log = logging.getLogger("ultrai_auth")
router = APIRouter(prefix=PREFIX, tags=["auth"])
wellknown = APIRouter(tags=["keys"])

EMAIL_PATTERN = r"^\s*[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+\s*$"
SERVICE_PATTERN = r"^[a-z][a-z0-9-]{0,31}$"
INVALID_LOGIN = "Invalid email or password."


# ---- request and response bodies --------------------------------------------------------------
class Body(BaseModel):
    # Unknown fields are refused (422), and the schema says so.
    model_config = ConfigDict(extra="forbid")


class Credentials(Body):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


class Registration(Credentials):
    # Surrounding blanks are trimmed; the address is lower-cased before it is stored.
    email: str = Field(min_length=3, max_length=254, pattern=EMAIL_PATTERN)


class RefreshRequest(Body):
    refresh_token: str = Field(min_length=1, max_length=4096)


class PasswordChange(Body):
    current_password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)
    new_password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


class PasswordConfirm(Body):
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


class ServiceTokenRequest(Body):
    service: str = Field(pattern=SERVICE_PATTERN)
    audience: str = Field(pattern=SERVICE_PATTERN)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"  # noqa: S105 (the scheme name)
    expires_in: int


class ServiceToken(BaseModel):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 (the scheme name)
    expires_in: int


class Account(BaseModel):
    id: str
    email: str
    created_at: float


# ---- helpers ----------------------------------------------------------------------------------
def normalize_email(email: str) -> str:
    return email.strip().lower()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _key(value: str) -> str:
    """A short, non-reversible identifier for rate-limit and key-value keys (no email in Redis)."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def too_many(decision: Decision, detail: str) -> ProblemError:
    return ProblemError(429, detail, title="Too many requests", headers={"Retry-After": str(decision.retry_after)})


def settings_of(request: Request) -> AuthSettings:
    return request.app.state.settings


async def db_session(request: Request):
    async with request.app.state.db.sessions() as session:
        yield session


DB = Annotated[AsyncSession, Depends(db_session)]


async def issue_session(request: Request, db: AsyncSession, user_id: str) -> TokenPair:
    """A new session (refresh-token family) with its first refresh token and an access token."""
    settings = settings_of(request)
    now = time.time()
    sid = str(uuid.uuid4())
    refresh = secrets.token_urlsafe(32)
    db.add(Session(id=sid, user_id=user_id, created_at=now, expires_at=now + settings.refresh_token_ttl_seconds))
    await db.flush()
    db.add(RefreshToken(token_hash=token_hash(refresh), session_id=sid, created_at=now))
    await db.commit()
    access, _ = request.app.state.signer.access_token(user_id, sid, now)
    return TokenPair(access_token=access, refresh_token=refresh, expires_in=settings.access_token_ttl_seconds)


async def revoke_sessions(request: Request, db: AsyncSession, user_id: str, *, commit: bool = True) -> None:
    """End every session of a user, in the database and for every verifier."""
    now = time.time()
    sids = list(
        (await db.execute(select(Session.id).where(Session.user_id == user_id, Session.revoked_at.is_(None)))).scalars()
    )
    await db.execute(
        update(Session).where(Session.user_id == user_id, Session.revoked_at.is_(None)).values(revoked_at=now)
    )
    if commit:
        await db.commit()
    await request.app.state.revoker.revoke("sid", *sids)


async def authenticated(request: Request, db: DB, principal: Annotated[Principal, Depends(current_user)]) -> User:
    """The current user: a verified access token whose session and account still exist."""
    if principal.service is not None:
        raise unauthorized("A user access token is required.")
    claims = principal.claims
    row = (
        await db.execute(
            select(User, Session.revoked_at)
            .join(Session, Session.user_id == User.id)
            .where(User.id == claims["sub"], Session.id == claims["sid"])
        )
    ).first()
    if row is None or row[1] is not None:
        raise unauthorized("The session has ended.")
    return row[0]


CurrentUser = Annotated[User, Depends(authenticated)]


def account(user: User) -> Account:
    return Account(id=user.id, email=user.email, created_at=user.created_at)


# ---- routes -----------------------------------------------------------------------------------
@router.post(
    "/register",
    status_code=201,
    response_model=Account,
    summary="Create an account",
    responses=problem_responses(409, 422, 429, 503),
)
async def register(body: Registration, request: Request, db: DB) -> Account:
    settings = settings_of(request)
    ip = client_address(request.scope, settings.proxies)
    decision = await request.app.state.limiter.hit(settings.register_rate_per_address, "register-ip", ip)
    if not decision.allowed:
        raise too_many(decision, "Too many registrations from this address; try again later.")
    email = normalize_email(body.email)
    problem = policy_problems(body.password, email, settings)
    if problem:
        raise ProblemError(422, f"Invalid request: password: {problem}", title="Validation failed")
    hashed = await request.app.state.passwords.hash(body.password)
    now = time.time()
    user = User(id=str(uuid.uuid4()), email=email, password_hash=hashed, created_at=now, password_changed_at=now)
    db.add(user)
    try:
        await db.commit()
    except IntegrityError:
        await db.rollback()
        raise ProblemError(409, "An account with this email already exists.", title="Conflict") from None
    log.info("account created: %s", user.id)
    return account(user)


@router.post(
    "/login",
    response_model=TokenPair,
    summary="Log in: an access token and a refresh token",
    responses=problem_responses(401, 422, 429, 503),
)
async def login(body: Credentials, request: Request, db: DB) -> TokenPair:
    settings = settings_of(request)
    state = request.app.state
    ip = client_address(request.scope, settings.proxies)
    email = normalize_email(body.email)
    account_key = _key(email)
    # Throttles first: no hashing for a refused attempt.
    decision = await state.limiter.hit(settings.login_rate_per_address, "login-ip", ip)
    if not decision.allowed:
        raise too_many(decision, "Too many login attempts from this address; try again later.")
    # An address that has logged into this account before is exempt from its failure limit, so an
    # attacker who fails on purpose cannot lock the owner out.
    known_key = f"known:{account_key}:{_key(ip)}"
    known = settings.known_address_days > 0 and await state.kv.get(known_key) is not None
    if not known:
        decision = await state.limiter.hit(settings.login_attempts_per_account, "login-account", account_key)
        if not decision.allowed:
            raise too_many(decision, "Too many login attempts for this account; try again later.")

    user = (await db.execute(select(User).where(User.email == email))).scalar_one_or_none()
    ok = await state.passwords.verify(user.password_hash if user else None, body.password)
    if not ok or user is None:
        raise unauthorized(INVALID_LOGIN)
    if state.passwords.needs_rehash(user.password_hash):
        user.password_hash = await state.passwords.hash(body.password)
    if settings.known_address_days > 0:
        await state.kv.set(known_key, b"1", ttl=settings.known_address_days * 86_400)
    return await issue_session(request, db, user.id)


@router.post(
    "/refresh",
    response_model=TokenPair,
    summary="Exchange a refresh token for new tokens (rotation; reuse ends the session)",
    responses=problem_responses(401, 422),
)
async def refresh(body: RefreshRequest, request: Request, db: DB) -> TokenPair:
    settings = settings_of(request)
    now = time.time()
    digest = token_hash(body.refresh_token)
    # Single use, atomically: only one request can flip used_at from NULL.
    result = await db.execute(
        update(RefreshToken)
        .where(RefreshToken.token_hash == digest, RefreshToken.used_at.is_(None))
        .values(used_at=now)
    )
    row = (
        await db.execute(
            select(RefreshToken.session_id, Session.user_id, Session.revoked_at, Session.expires_at)
            .join(Session, Session.id == RefreshToken.session_id)
            .where(RefreshToken.token_hash == digest)
        )
    ).first()
    if row is None:
        await db.rollback()
        raise unauthorized("The refresh token is not valid.")
    sid, user_id, revoked_at, expires_at = row
    if result.rowcount != 1:
        # A spent token came back: it was stolen or replayed. End the whole family (RFC 9700 §4.14.2).
        await db.execute(update(Session).where(Session.id == sid, Session.revoked_at.is_(None)).values(revoked_at=now))
        await db.commit()
        await request.app.state.revoker.revoke("sid", sid)
        log.warning("refresh token reuse: session %s revoked", sid)
        raise unauthorized("The refresh token is not valid.")
    if revoked_at is not None or expires_at <= now:
        await db.commit()
        raise unauthorized("The refresh token is not valid.")
    new = secrets.token_urlsafe(32)
    db.add(RefreshToken(token_hash=token_hash(new), session_id=sid, created_at=now))
    await db.commit()
    access, _ = request.app.state.signer.access_token(user_id, sid, now)
    return TokenPair(access_token=access, refresh_token=new, expires_in=settings.access_token_ttl_seconds)


@router.post(
    "/logout",
    status_code=204,
    summary="End the session of a refresh token (and of the access token sent with it)",
    responses=problem_responses(422),
)
async def logout(body: RefreshRequest, request: Request, db: DB) -> Response:
    now = time.time()
    sid = (
        await db.execute(
            select(RefreshToken.session_id).where(RefreshToken.token_hash == token_hash(body.refresh_token))
        )
    ).scalar_one_or_none()
    if sid is not None:
        await db.execute(update(Session).where(Session.id == sid, Session.revoked_at.is_(None)).values(revoked_at=now))
        await db.commit()
        await request.app.state.revoker.revoke("sid", sid)
    token = bearer_token(request)
    if token:
        try:
            claims = await request.app.state.verifier.verify_signature(token, "access")
            await request.app.state.revoker.revoke("jti", claims["jti"])
        except ProblemError:
            pass  # logout never fails on a bad access token
    # The same answer whether or not the token was known.
    return Response(status_code=204)


@router.get("/me", response_model=Account, summary="The current account", responses=problem_responses(401))
async def me(user: CurrentUser) -> Account:
    return account(user)


@router.post(
    "/password",
    status_code=204,
    summary="Change the password; every session of the account ends",
    responses=problem_responses(401, 422, 429, 503),
)
async def change_password(body: PasswordChange, request: Request, db: DB, user: CurrentUser) -> Response:
    settings = settings_of(request)
    state = request.app.state
    account_key = _key(user.email)
    decision = await state.limiter.hit(settings.login_attempts_per_account, "password-change", account_key)
    if not decision.allowed:
        raise too_many(decision, "Too many attempts for this account; try again later.")
    if not await state.passwords.verify(user.password_hash, body.current_password):
        raise unauthorized("The current password is not correct.")
    problem = policy_problems(body.new_password, user.email, settings)
    if problem:
        raise ProblemError(422, f"Invalid request: new_password: {problem}", title="Validation failed")
    user.password_hash = await state.passwords.hash(body.new_password)
    user.password_changed_at = time.time()
    await revoke_sessions(request, db, user.id)
    log.info("password changed: %s", user.id)
    return Response(status_code=204)


@router.delete(
    "/me",
    status_code=204,
    summary="Delete the account (confirm with the password); every token of it stops working",
    responses=problem_responses(401, 422, 503),
)
async def delete_account(body: PasswordConfirm, request: Request, db: DB, user: CurrentUser) -> Response:
    state = request.app.state
    if not await state.passwords.verify(user.password_hash, body.password):
        raise unauthorized("The password is not correct.")
    user_id = user.id
    await revoke_sessions(request, db, user_id, commit=False)
    await db.execute(
        delete(RefreshToken).where(RefreshToken.session_id.in_(select(Session.id).where(Session.user_id == user_id)))
    )
    await db.execute(delete(Session).where(Session.user_id == user_id))
    await db.execute(delete(User).where(User.id == user_id))
    await db.commit()
    await state.revoker.revoke("user", user_id)
    log.info("account deleted: %s", user_id)
    return Response(status_code=204)


# ---- internal: service tokens and the revocation list ------------------------------------------
def require_internal(request: Request) -> None:
    token = bearer_token(request) or ""
    expected = settings_of(request).internal_token_secret.get_secret_value()
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise unauthorized("A valid internal credential is required.")


@router.post(
    "/service-token",
    response_model=ServiceToken,
    summary="A short-lived token for a service to call another (internal; Bearer INTERNAL_TOKEN_SECRET)",
    responses=problem_responses(401, 422),
    dependencies=[Depends(require_internal)],
)
async def service_token(body: ServiceTokenRequest, request: Request) -> ServiceToken:
    token, _ = request.app.state.signer.service_token(body.service, body.audience)
    return ServiceToken(access_token=token, expires_in=settings_of(request).service_token_ttl_seconds)


@router.get(
    "/revocations",
    summary="Revocations still in force (internal; what verifiers poll when there is no shared Redis)",
    responses=problem_responses(401),
    dependencies=[Depends(require_internal)],
)
async def revocations(request: Request) -> dict[str, Any]:
    return request.app.state.revoker.listing()


@wellknown.get("/.well-known/jwks.json", summary="The public keys that verify our tokens")
async def jwks(request: Request, response: Response) -> dict[str, Any]:
    response.headers["Cache-Control"] = "public, max-age=300"
    return request.app.state.signer.jwks()
