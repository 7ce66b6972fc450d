"""The token contract between services: verification of the JWTs only the auth service signs.

- Access tokens: EdDSA (Ed25519), header ``typ: at+jwt`` (RFC 9068) and ``kid``; claims ``iss``,
  ``aud`` (JWT_AUDIENCE), ``sub`` (user id), ``exp``, ``iat``, ``nbf``, ``jti`` and ``sid`` (the
  session, i.e. the refresh-token family).
- Service tokens: same key and issuer, ``typ: service+jwt``, ``sub: "service:<caller>"``,
  ``aud: "ultrai-<target>"``; minted by ``POST /api/v1/auth/service-token``.

``TokenVerifier`` fetches the auth service's JWKS (``/.well-known/jwks.json``), caches it, refetches on
an unknown ``kid`` at most once per JWKS_REFETCH_INTERVAL, allows EdDSA only (compared
case-sensitively), requires every claim, and checks ``typ``, ``iss`` and ``aud`` by exact equality,
``exp``/``nbf``/``iat`` with a small leeway, and revocation. Every refusal is a 401 problem+json with
``WWW-Authenticate: Bearer``; nothing about a token ever reaches a log.

Revocation: the auth service writes, in the shared key-value store under the fixed namespace
``<REDIS_KEY_PREFIX>:revoked:``, ``jti:<jti>`` (one token), ``sid:<session>`` (logout, password change,
refresh reuse) and ``user:<id>`` (a deleted account) entries that live as long as an access token
can. With Redis every service sees them at once. Without Redis (local development) each verifier also
reads auth's revocation list (``GET /api/v1/auth/revocations``, shown INTERNAL_TOKEN_SECRET) at most
every REVOCATION_POLL_SECONDS.

FastAPI dependencies: put a ``TokenVerifier`` at ``app.state.verifier`` in the lifespan, then use
``Depends(current_user)`` / ``Depends(current_service)``.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import jwt
from fastapi import Depends, Request
from jwt.algorithms import OKPAlgorithm
from starlette.requests import HTTPConnection

from shared.apikeys import KeyGrant, KeyResolver, current_key, invalid_key, is_api_key, key_address, required_scope
from shared.client import http_errors, tls_context
from shared.errors import ProblemError
from shared.kv import KeyValue, StoreUnavailable
from shared.metrics import REVOCATION_UNKNOWN
from shared.settings import DEV_INTERNAL_TOKEN_SECRET, ServiceSettings

if TYPE_CHECKING:
    import httpx

ALGORITHM = "EdDSA"
ALGORITHMS = (ALGORITHM,)
ACCESS_TYP = "at+jwt"
SERVICE_TYP = "service+jwt"
TokenKind = Literal["access", "service"]
TYP_OF: dict[str, str] = {"access": ACCESS_TYP, "service": SERVICE_TYP}
REVOCATION_NAMESPACE = "revoked"
JWKS_PATH = "/.well-known/jwks.json"
SERVICE_TOKEN_PATH = "/api/v1/auth/service-token"  # noqa: S105 (a path)
REVOCATIONS_PATH = "/api/v1/auth/revocations"
ON_BEHALF_HEADER = "x-on-behalf-of"
# With a service token and X-On-Behalf-Of only: the id of the API key the user acted with, so the
# call is counted and limited as the key's. Any other caller's header is ignored.
ON_BEHALF_KEY_HEADER = "x-on-behalf-of-key"

MAX_TOKEN_LENGTH = 8192
# Tokens whose signature and claims were verified, kept (at most this many per verifier) so that the
# next request with the same token skips the signature check; revocation is checked on every request.
VERIFIED_CACHE_SIZE = 4096
# With no signing key at all, how often a request may ask auth for the keys again.
NO_KEYS_RETRY_SECONDS = 0.25
# After the shared store failed, how long its "not revoked" is checked against auth's list as well.
RECOVERY_SECONDS = 10.0
_KID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_USER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "nbf", "jti")


def service_audience(service: str) -> str:
    """The ``aud`` of a service token meant for ``service`` (e.g. "ultrai-llm")."""
    return f"ultrai-{service}"


def unauthorized(detail: str = "A valid access token is required.") -> ProblemError:
    return ProblemError(
        401,
        detail,
        title="Unauthorized",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS, or a 401: three base64url segments, a JSON object first."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise unauthorized("The token is not valid.")
    parts = token.split(".")
    if len(parts) != 3 or not all(_B64URL.match(p) for p in parts[:2]) or (parts[2] and not _B64URL.match(parts[2])):
        raise unauthorized("The token is not valid.")
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise unauthorized("The token is not valid.") from None
    if not isinstance(header, dict):
        raise unauthorized("The token is not valid.")
    return header


def revocation_names(claims: dict[str, Any]) -> list[str]:
    """The entries that would revoke a token: its jti, its session and its user."""
    names = [f"jti:{claims['jti']}", f"user:{claims['sub']}"]
    if isinstance(claims.get("sid"), str):
        names.append(f"sid:{claims['sid']}")
    if isinstance(claims.get("api_key"), str):
        names.append(f"key:{claims['api_key']}")
    return names


class RevocationStore:
    """Revocation entries: in the shared key-value store under a namespace every service reads, and
    in this process, for every entry it has learned (until the entry's own expiry).

    What the process has learned is never forgotten because Redis is slow or away; what it has not
    learned is never guessed: ``lookup`` raises ``StoreUnavailable`` when Redis cannot answer.
    """

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self._learned: dict[str, float] = {}  # name -> wall-clock expiry
        self._pending: dict[str, float] = {}  # written here, not yet taken by the shared store
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    def for_settings(cls, settings: ServiceSettings) -> RevocationStore:
        return cls(KeyValue.for_settings(settings, REVOCATION_NAMESPACE))

    @property
    def shared(self) -> bool:
        return self.kv.configured

    def learn(self, name: str, expires: float) -> None:
        if expires > time.time():
            self._learned[name] = max(expires, self._learned.get(name, 0.0))

    def known(self, names: list[str]) -> bool:
        """Whether this process already knows one of ``names`` to be revoked (no I/O)."""
        now = time.time()
        for name in names:
            until = self._learned.get(name)
            if until is not None:
                if until > now:
                    return True
                del self._learned[name]
        return False

    async def revoke(self, kind: Literal["jti", "sid", "user", "key"], value: str, ttl: float) -> None:
        """Revoke one token (jti), one session (sid), every token of a deleted user (user) or one
        API key (key).

        Learned here at once. An entry the shared store cannot take now (Redis down or busy) is
        kept and written again every second until it is taken or expires."""
        name = f"{kind}:{value}"
        expires = time.time() + max(ttl, 1.0)
        self.learn(name, expires)
        self._pending[name] = expires
        await self.flush()

    async def flush(self) -> None:
        """Write the entries the shared store has not taken yet."""
        for name, expires in list(self._pending.items()):
            ttl = expires - time.time()
            if ttl <= 0:
                self._pending.pop(name, None)
                continue
            try:
                await self.kv.set(name, f"{expires:.0f}", ttl=ttl, strict=True)
            except StoreUnavailable:
                break
            if self.kv.configured and self.kv.down:  # the write fell back to process memory
                break
            self._pending.pop(name, None)
        if self._pending and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        while self._pending:
            await asyncio.sleep(1.0)
            await self.flush()

    @property
    def unsynced(self) -> int:
        """Revocations not yet in the shared store."""
        return len(self._pending)

    async def lookup(self, names: list[str]) -> bool:
        """Whether one of ``names`` is revoked, asked of the shared store in one round trip; the
        entries found are learned. ``StoreUnavailable`` when it cannot answer."""
        values = await self.kv.mget_strict(names)
        found = False
        for name, value in zip(names, values, strict=True):
            if value is not None:
                found = True
                self.learn(name, _expiry_of(value))
        return found

    async def revoked(self, claims: dict[str, Any]) -> bool:
        """Local first, then the shared store (raises ``StoreUnavailable`` when it cannot answer);
        without a shared store, only what this process knows."""
        names = revocation_names(claims)
        if self.known(names):
            return True
        if not self.shared:
            return False
        return await self.lookup(names)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        await self.kv.close()


def _expiry_of(value: bytes) -> float:
    """The wall-clock expiry stored with an entry; entries written before expiries were stored
    count for the longest a token can live."""
    try:
        return float(value)
    except ValueError:
        return time.time() + 3600.0


def _revocation_unknown() -> ProblemError:
    return ProblemError(
        503,
        "Whether the token has been revoked cannot be checked right now; try again shortly.",
        title="Service unavailable",
        headers={"Retry-After": "2"},
    )


RevocationSource = Callable[[], Awaitable[dict[str, dict[str, float]]]]


@dataclass
class Principal:
    """Who is calling: a user (access token, or a service acting for a user) or a service."""

    user_id: str | None
    kind: Literal["user", "service"]
    claims: dict[str, Any]
    service: str | None = None
    key: KeyGrant | None = None  # when the caller presented an API key


JwksSource = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class _Verified:
    """A token that passed every check but revocation, while its expiry and the keys it was checked
    against last."""

    claims: dict[str, Any]
    keys: dict[str, Any]  # the verifier's key set at the time: a new set (refetched JWKS) drops it
    valid_until: float  # wall clock: exp + leeway, the moment jwt.decode would refuse it


@dataclass
class _KeyCache:
    keys: dict[str, Any] = field(default_factory=dict)
    next_fetch: float = -1e9
    last_forced: float = -1e9
    last_attempt: float = -1e9


class TokenVerifier:
    """Verifies access and service tokens for one service (``service`` names it for service-token ``aud``).

    ``jwks_source`` replaces the HTTP fetch (the auth service reads its own keys directly);
    ``revocations`` replaces the store built from settings; ``revocation_source`` replaces the
    HTTP poll of auth's revocation list (auth reads its own).

    Revocation fails closed: a token is refused when its revocation is known here or in the shared
    store; when the shared store cannot answer (down, or its pool busy past the bounded wait), auth's
    own list is asked; when that is not fresh either, the answer is 503 with Retry-After, never
    "valid" by default.
    """

    def __init__(
        self,
        settings: ServiceSettings,
        service: str,
        *,
        jwks_source: JwksSource | None = None,
        revocations: RevocationStore | None = None,
        revocation_source: RevocationSource | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.leeway = settings.jwt_leeway_seconds
        self.cache_seconds = settings.jwks_cache_seconds
        self.refetch_interval = settings.jwks_refetch_interval
        self.retry_seconds = 1.0  # after a failed fetch
        self.poll_seconds = settings.revocation_poll_seconds
        self.max_staleness = max(settings.revocation_max_staleness_seconds, self.poll_seconds)
        self._revocation_source = revocation_source
        self._source = jwks_source
        self._cache = _KeyCache()
        self._lock = asyncio.Lock()
        self._verified: dict[tuple[str, str], _Verified] = {}
        self._own_revocations = revocations is None
        self.revocations = revocations or RevocationStore.for_settings(settings)
        self._http: httpx.AsyncClient | None = None
        # A verifier inside auth (its keys given) learns every revocation in its own store, and
        # reads auth's list only when given it; every other verifier reads it over HTTP.
        self._polls = revocation_source is not None or jwks_source is None
        if jwks_source is None:
            import httpx

            self._http = httpx.AsyncClient(
                base_url=settings.auth_url,
                timeout=httpx.Timeout(2.0, connect=1.0),
                transport=transport,
                trust_env=False,
                verify=tls_context(),
            )
        # API keys: resolved through auth (shared.apikeys); auth itself takes no key.
        self.keys = KeyResolver(settings, transport=transport) if jwks_source is None else None
        self._polled: dict[str, Any] = {"jti": {}, "sid": {}, "user": {}, "key": {}}
        self._polled_at = -1e9  # last attempt
        self._polled_ok_at = -1e9  # last successful read
        self._store_failed_at = -1e9
        self._poll_lock = asyncio.Lock()
        self._warm: asyncio.Task[None] | None = None

    def start(self, attempts: int = 240, pause: float = 0.5) -> None:
        """Fetch the keys in the background from start-up, retrying while auth is not up yet, so
        that a service which has not seen a token yet can still verify one while auth is down."""
        if self._warm is None and self._source is None:
            self._warm = asyncio.get_running_loop().create_task(self._warm_up(attempts, pause))

    async def _warm_up(self, attempts: int, pause: float) -> None:
        for _ in range(attempts):
            try:
                await self._refresh_keys(force=False)
            except ProblemError:
                pass
            if self._cache.keys:
                return
            await asyncio.sleep(pause)

    async def aclose(self) -> None:
        if self._warm is not None:
            self._warm.cancel()
        if self._http is not None:
            await self._http.aclose()
        if self.keys is not None:
            await self.keys.aclose()
        if self._own_revocations:
            await self.revocations.close()

    # ---- keys -------------------------------------------------------------------------------
    async def _fetch_jwks(self) -> dict[str, Any]:
        if self._source is not None:
            return await self._source()
        assert self._http is not None
        resp = await self._http.get(JWKS_PATH)
        resp.raise_for_status()
        jwks: dict[str, Any] = resp.json()
        return jwks

    def _unavailable(self) -> ProblemError:
        return ProblemError(503, "Token keys are unavailable; try again shortly.", headers={"Retry-After": "2"})

    def _due(self, now: float) -> bool:
        """Whether an ordinary fetch is due. With no key at all, every request would fail until
        the next one, so then it is due as soon as a short pause after the last attempt is over
        (a service that started before auth must not refuse tokens long after auth is up)."""
        if now >= self._cache.next_fetch:
            return True
        return not self._cache.keys and now - self._cache.last_attempt >= NO_KEYS_RETRY_SECONDS

    async def _refresh_keys(self, force: bool) -> None:
        if not force and not self._due(time.monotonic()):
            return  # the common case: no lock, no I/O
        async with self._lock:
            now = time.monotonic()
            if force:
                if now - self._cache.last_forced < self.refetch_interval:
                    return  # unknown kids refetch at most once per interval
                self._cache.last_forced = now
            elif not self._due(now):
                return
            self._cache.last_attempt = now
            try:
                document = await self._fetch_jwks()
            except http_errors(ValueError, OSError):
                # Auth unreachable: try again after a pause, not on every request (each would wait
                # for the failing fetch); meanwhile keep serving with the keys we have, if any.
                self._cache.next_fetch = now + self.retry_seconds
                if self._cache.keys:
                    return
                raise self._unavailable() from None
            keys: dict[str, Any] = {}
            for jwk in document.get("keys", []) if isinstance(document, dict) else []:
                if not isinstance(jwk, dict):
                    continue
                if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or jwk.get("alg", ALGORITHM) != ALGORITHM:
                    continue
                kid = jwk.get("kid")
                if not isinstance(kid, str) or not _KID.match(kid) or "d" in jwk:
                    continue
                try:
                    keys[kid] = OKPAlgorithm.from_jwk(json.dumps(jwk))
                except (jwt.InvalidKeyError, ValueError, TypeError):
                    continue
            self._cache.keys = keys
            self._cache.next_fetch = now + self.cache_seconds

    async def _key(self, kid: str) -> Any:
        await self._refresh_keys(force=False)
        if not self._cache.keys:
            raise self._unavailable()  # never fetched: auth has been unreachable
        key = self._cache.keys.get(kid)
        if key is None:
            await self._refresh_keys(force=True)
            key = self._cache.keys.get(kid)
        if key is None:
            raise unauthorized("The token is not valid.")
        return key

    # ---- verification -----------------------------------------------------------------------
    async def verify(self, token: str, typ: TokenKind = "access") -> dict[str, Any]:
        """The verified claims of ``token`` as a ``typ`` token, or a 401 ProblemError."""
        claims = await self.verify_signature(token, typ)
        if await self._is_revoked(claims):
            raise unauthorized("The token has been revoked.")
        return claims

    async def verify_signature(self, token: str, typ: TokenKind = "access") -> dict[str, Any]:
        """Everything but revocation: format, header, signature and claims.

        A token verified before is answered from a bounded cache (its claims, copied) while it has
        not expired and the key set it was checked against is still the current one; anything else
        goes through every check again."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise unauthorized("The token is not valid.")
        seen = self._verified.get((token, typ))
        if seen is not None:
            await self._refresh_keys(force=False)
            if seen.keys is self._cache.keys and time.time() < seen.valid_until:
                return dict(seen.claims)
            del self._verified[(token, typ)]
        claims = await self._verify_signature(token, typ)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._forget_verified()
        self._verified[(token, typ)] = _Verified(dict(claims), self._cache.keys, claims["exp"] + self.leeway)
        return claims

    def _forget_verified(self) -> None:
        """Make room: the expired entries go, or the oldest quarter when none has expired."""
        now = time.time()
        gone = [key for key, seen in self._verified.items() if seen.valid_until <= now]
        if not gone:
            gone = list(itertools.islice(self._verified, max(1, VERIFIED_CACHE_SIZE // 4)))
        for key in gone:
            del self._verified[key]

    async def _verify_signature(self, token: str, typ: TokenKind) -> dict[str, Any]:
        header = unverified_header(token)
        # RFC 8725 §3.1: the algorithm is ours alone, compared exactly (no "eddsa", no "none").
        if header.get("alg") != ALGORITHM:
            raise unauthorized("The token is not valid.")
        # RFC 8725 §3.11: explicit typing keeps access and service tokens apart.
        if header.get("typ") != TYP_OF[typ]:
            raise unauthorized("The token is not valid.")
        # RFC 7515 §4.1.11: we understand no critical extension, so any "crit" is refused.
        if "crit" in header:
            raise unauthorized("The token is not valid.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not _KID.match(kid):
            raise unauthorized("The token is not valid.")
        # jku/x5u/jwk/x5c are never read: keys come only from our JWKS.
        key = await self._key(kid)
        audience = self.audience if typ == "access" else service_audience(self.service)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS), "strict_aud": True, "verify_signature": True},
            )
        except jwt.PyJWTError:
            raise unauthorized("The token is not valid.") from None
        self._check_claims(claims, typ, audience)
        return claims

    def _check_claims(self, claims: dict[str, Any], typ: TokenKind, audience: str) -> None:
        # Exact comparisons, whatever the library does (a prefix of our issuer is not our issuer).
        if claims.get("iss") != self.issuer or claims.get("aud") != audience:
            raise unauthorized("The token is not valid.")
        for name in ("exp", "iat", "nbf"):
            if not isinstance(claims.get(name), int | float) or isinstance(claims.get(name), bool):
                raise unauthorized("The token is not valid.")
        if claims["iat"] > time.time() + self.leeway:
            raise unauthorized("The token is not valid.")
        sub, jti = claims.get("sub"), claims.get("jti")
        if not isinstance(sub, str) or not isinstance(jti, str) or not jti or len(jti) > 128:
            raise unauthorized("The token is not valid.")
        if typ == "access":
            if sub.startswith("service:") or not _USER_ID.match(sub) or not isinstance(claims.get("sid"), str):
                raise unauthorized("The token is not valid.")
        else:
            caller = sub.removeprefix("service:")
            if not sub.startswith("service:") or not _NAME.match(caller):
                raise unauthorized("The token is not valid.")

    async def _is_revoked(self, claims: dict[str, Any]) -> bool:
        names = revocation_names(claims)
        if self.revocations.known(names):
            return True
        if self.revocations.shared:
            try:
                if await self.revocations.lookup(names):
                    return True
                if not self._polls or time.monotonic() - self._store_failed_at > RECOVERY_SECONDS:
                    return False
                # Redis answered, but it failed moments ago: what auth revoked meanwhile may not
                # be written back yet, so auth's list is read too (when it can be).
                return await self._in_polled_list(claims, required=False)
            except StoreUnavailable:
                self._store_failed_at = time.monotonic()
            if not self._polls:
                REVOCATION_UNKNOWN.labels(self.service).inc()
                raise _revocation_unknown()
            return await self._in_polled_list(claims, required=True)
        if self.poll_seconds <= 0 or not self._polls:
            return False
        return await self._in_polled_list(claims, required=True)

    async def _in_polled_list(self, claims: dict[str, Any], *, required: bool) -> bool:
        """Whether auth's revocation list names the token; ``required``: 503 when the list is not
        fresh (auth unreachable for longer than REVOCATION_MAX_STALENESS_SECONDS)."""
        await self._poll_revocations()
        if time.monotonic() - self._polled_ok_at > self.max_staleness:
            if not required:
                return False
            REVOCATION_UNKNOWN.labels(self.service).inc()
            raise _revocation_unknown()
        polled = self._polled
        now = time.time()
        hits = (
            polled["jti"].get(claims["jti"]),
            polled["sid"].get(claims.get("sid")),
            polled["user"].get(claims["sub"]),
            polled["key"].get(claims.get("api_key")),
        )
        for until in hits:
            if until is not None and float(until) > now:
                return True
        return False

    async def _poll_revocations(self) -> None:
        interval = max(self.poll_seconds, 0.25)  # one read at a time, however many requests wait
        if time.monotonic() - self._polled_at < interval:
            return
        async with self._poll_lock:
            if time.monotonic() - self._polled_at < interval:
                return
            try:
                body = await self._read_revocations()
                self._polled = {k: dict(body.get(k) or {}) for k in ("jti", "sid", "user", "key")}
                self._polled_ok_at = time.monotonic()
            except http_errors(ValueError, AttributeError, TypeError):
                pass  # keep the last list until it is too old to vouch for (then: 503)
            self._polled_at = time.monotonic()

    async def authenticate(self, token: str, connection: HTTPConnection) -> Principal:
        """The user of an access token or an API key presented on ``connection`` (an HTTP request, or
        a WebSocket whose token came in its first message): the one check every route, the edge
        and every socket make of a user's credential."""
        if is_api_key(token):
            return await self.verify_key(token, connection)
        claims = await self.verify(token, "access")
        return Principal(claims["sub"], "user", claims)

    async def verify_key(self, key: str, connection: HTTPConnection) -> Principal:
        """The principal of an API key allowed to make this request (or open this socket) here:
        resolved (cached briefly), not expired, not revoked (checked like a token's, on every
        request), and with the scope the request needs (403 otherwise). Every other refusal is the
        same 401."""
        if self.keys is None:
            raise unauthorized("An API key cannot be used here; use an access token.")
        grant = await self.keys.resolve(key, key_address(connection.scope, self.settings))
        return await self._granted(grant, connection)

    async def on_behalf_key(self, key_id: str, user_id: str, connection: HTTPConnection) -> Principal:
        """The principal of a service acting for ``user_id`` with the user's API key ``key_id`` (the
        key a request to that service was made with): the key is resolved by its id, must be the
        user's, live, unexpired and unrevoked, and hold the scope this request needs here."""
        if self.keys is None:
            raise unauthorized("An API key cannot be used here; use an access token.")
        grant = await self.keys.resolve_id(key_id, user_id)
        return await self._granted(grant, connection)

    async def _granted(self, grant: KeyGrant, connection: HTTPConnection) -> Principal:
        claims = grant.claims()
        if await self._is_revoked(claims):
            raise invalid_key()
        # A WebSocket has no method: it is held to the scope of a write (for the llm, "llm").
        method = str(connection.scope.get("method") or "WEBSOCKET")
        needed = required_scope(self.service, method, connection.url.path)
        if needed is None:
            raise unauthorized("An API key cannot be used here; use an access token.")
        if needed not in grant.scopes:
            raise ProblemError(403, f"This API key does not have the {needed} scope.", title="Forbidden")
        return Principal(grant.user_id, "user", claims, key=grant)

    async def still_valid(self, principal: Principal) -> None:
        """Raise the 401 a new request would get when the principal's token or key has been
        revoked since it was verified (what a long-lived socket checks before starting more work)."""
        if await self._is_revoked(principal.claims):
            raise invalid_key() if principal.key is not None else unauthorized("The token has been revoked.")

    async def _read_revocations(self) -> dict[str, Any]:
        if self._revocation_source is not None:
            return await self._revocation_source()
        assert self._http is not None
        secret = self.settings.internal_token_secret.get_secret_value()
        resp = await self._http.get(REVOCATIONS_PATH, headers={"Authorization": f"Bearer {secret}"})
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body


# ---- FastAPI dependencies ---------------------------------------------------------------------
def _verifier(request: Request) -> TokenVerifier:
    verifier: TokenVerifier | None = getattr(request.app.state, "verifier", None)
    if verifier is None:
        raise RuntimeError("app.state.verifier is not set: create a TokenVerifier in the lifespan")
    return verifier


async def current_user(request: Request) -> Principal:
    """A user's access token or API key; or a service token for this service with
    ``X-On-Behalf-Of: <user id>`` (and, when the user acted with an API key,
    ``X-On-Behalf-Of-Key: <key id>``: the call is then the key's, counted and limited as such)."""
    token = bearer_token(request)
    if token is None:
        raise unauthorized()
    verifier = _verifier(request)
    if not is_api_key(token) and unverified_header(token).get("typ") == SERVICE_TYP:
        claims = await verifier.verify(token, "service")
        on_behalf = request.headers.get(ON_BEHALF_HEADER)
        if not on_behalf or not _USER_ID.match(on_behalf):
            raise unauthorized("A service token needs X-On-Behalf-Of to act for a user.")
        service = claims["sub"].removeprefix("service:")
        key_id = request.headers.get(ON_BEHALF_KEY_HEADER)
        if key_id is not None:
            principal = await verifier.on_behalf_key(key_id, on_behalf, request)
            principal.service = service  # the claims stay the key's: revocation is checked on them
        else:
            principal = Principal(on_behalf, "user", claims, service=service)
    else:
        principal = await verifier.authenticate(token, request)
    current_key.set(principal.key)
    request.state.principal = principal
    return principal


async def current_service(request: Request) -> Principal:
    """A service token whose audience is this service."""
    token = bearer_token(request)
    if token is None:
        raise unauthorized("A service token is required.")
    claims = await _verifier(request).verify(token, "service")
    principal = Principal(None, "service", claims, service=claims["sub"].removeprefix("service:"))
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_user)]
ServicePrincipal = Annotated[Principal, Depends(current_service)]
Recheck = Callable[[], Awaitable[None]]


async def revocation_recheck(request: Request, principal: CurrentPrincipal) -> Recheck:
    """For a request whose work outlives its start (an upload received and extracted for seconds):
    a check to make just before its result is committed, raising the 401 a new request would get
    when the caller's token or key was revoked meanwhile (a logout, the account deleted: its data
    may have been erased already, and must not be written again after)."""
    verifier = _verifier(request)

    async def recheck() -> None:
        await verifier.still_valid(principal)

    return recheck


RevocationRecheck = Annotated[Recheck, Depends(revocation_recheck)]


# ---- obtaining service tokens -----------------------------------------------------------------
class ServiceTokenSource:
    """An async callable returning a cached service token from ``caller`` to ``audience``, renewed a
    minute before it expires; pass it as ``token=`` to ``shared.client.ServiceClient``."""

    def __init__(
        self,
        settings: ServiceSettings,
        caller: str,
        audience: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        renew_before: float = 60.0,
    ) -> None:
        secret = settings.internal_token_secret.get_secret_value()
        if settings.is_production and hmac.compare_digest(secret, DEV_INTERNAL_TOKEN_SECRET):
            raise ValueError("INTERNAL_TOKEN_SECRET must be set in production")
        self.caller = caller
        self.audience = audience
        self.renew_before = renew_before
        self._secret = secret
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        import httpx

        self._http = httpx.AsyncClient(
            base_url=settings.auth_url,
            timeout=httpx.Timeout(5.0, connect=1.0),
            transport=transport,
            trust_env=False,
            verify=tls_context(),
        )

    async def __call__(self) -> str:
        if self._token is not None and time.monotonic() < self._expires - self.renew_before:
            return self._token
        async with self._lock:
            if self._token is not None and time.monotonic() < self._expires - self.renew_before:
                return self._token
            resp = await self._http.post(
                SERVICE_TOKEN_PATH,
                json={"service": self.caller, "audience": self.audience},
                headers={"Authorization": f"Bearer {self._secret}"},
            )
            if resp.status_code != 200:
                raise RuntimeError(
                    f"auth refused a service token for {self.caller}->{self.audience}: {resp.status_code}"
                )
            body = resp.json()
            self._token = body["access_token"]
            self._expires = time.monotonic() + float(body["expires_in"])
            return self._token

    async def aclose(self) -> None:
        await self._http.aclose()
