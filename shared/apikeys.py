"""API keys for programmatic clients: the key format, and resolving a key to its grant.

A key is ``uai_<id>_<secret>``: ``uai_`` so secret scanners recognise it, a 12-character random id
(shown in lists) and 256 random bits. Auth stores only the SHA-256 of the whole key (256 random bits
need no slow hash), so what is at rest cannot be presented as a key.

``KeyResolver`` turns a presented key into its ``KeyGrant`` (user, scopes, expiry, limits): from a
short in-process cache, then the shared cache (Redis, when configured), then auth's internal
resolution endpoint (shown INTERNAL_TOKEN_SECRET, throttled there per client address). The grant is
cached for API_KEY_CACHE_SECONDS; revocation does not wait for it: ``shared.tokens.TokenVerifier``
checks ``key:<id>`` and ``user:<id>`` revocation entries on every request, as it does for tokens.

Every refusal of a key says the same thing, whether the key is malformed, unknown, wrong, expired or
revoked, so a guess learns nothing; a key never reaches a log (``shared.logs`` scrubs ``uai_…``).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import re
import secrets
import string
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from shared.client import tls_context
from shared.errors import ProblemError
from shared.kv import KeyValue, StoreUnavailable
from shared.net import TrustedProxies, client_address
from shared.settings import ServiceSettings

if TYPE_CHECKING:
    import httpx

KEY_PREFIX = "uai_"
KEY_RESOLVE_PATH = "/api/v1/auth/keys/resolve"
KEY_SPEND_PATH = "/api/v1/auth/keys/spend"
KEY_GRANT_PATH = "/api/v1/auth/keys/grant"
SCOPES = ("llm", "documents:read", "documents:write")
INVALID_KEY = "The API key is not valid."
KEY_ID_LENGTH = 12
_ID_ALPHABET = string.ascii_lowercase + string.digits
_KEY = re.compile(r"^uai_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")
_HASH = re.compile(r"^[0-9a-f]{64}$")
_KEY_ID = re.compile(r"^[a-z0-9]{12}$")
CACHE_NAMESPACE = "apikeys"
# Where a service behind the gateway may take the client's address from X-Forwarded-For.
PRIVATE_NETWORKS = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")

# The key of the current request, when it was made with one (usage and limits per key).
current_key: contextvars.ContextVar[KeyGrant | None] = contextvars.ContextVar("current_api_key", default=None)


def new_key() -> tuple[str, str]:
    """A new key and its id."""
    key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_hash(key: str) -> str:
    """How a key is stored and looked up."""
    return hashlib.sha256(key.encode()).hexdigest()


def is_api_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def well_formed(key: str) -> bool:
    return _KEY.match(key) is not None


def valid_key_id(value: str) -> bool:
    return _KEY_ID.match(value) is not None


def valid_hash(value: str) -> bool:
    return _HASH.match(value) is not None


def invalid_key() -> ProblemError:
    return ProblemError(
        401, INVALID_KEY, title="Unauthorized", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


@dataclass(frozen=True)
class KeyGrant:
    """What a key allows: whose it is, its scopes, expiry (Unix seconds) and limits."""

    key_id: str
    user_id: str
    scopes: tuple[str, ...]
    expires_at: float | None = None
    budget_usd: float | None = None
    rpm: int | None = None
    tpm: int | None = None

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["scopes"] = list(self.scopes)
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> KeyGrant:
        return cls(
            key_id=str(body["key_id"]),
            user_id=str(body["user_id"]),
            scopes=tuple(str(s) for s in body["scopes"]),
            expires_at=None if body.get("expires_at") is None else float(body["expires_at"]),
            budget_usd=None if body.get("budget_usd") is None else float(body["budget_usd"]),
            rpm=None if body.get("rpm") is None else int(body["rpm"]),
            tpm=None if body.get("tpm") is None else int(body["tpm"]),
        )

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or time.time())

    def claims(self) -> dict[str, Any]:
        """Claims in the shape of a token's, for what reads a principal's claims (and revocation)."""
        return {"sub": self.user_id, "jti": f"key-{self.key_id}", "api_key": self.key_id, "scope": list(self.scopes)}


def required_scope(service: str, method: str, path: str) -> str | None:
    """The scope a request needs, at ``service`` (the gateway by the path); None: no key may do it."""
    read = method in ("GET", "HEAD", "OPTIONS")
    if service == "gateway":
        if path == "/v1" or path.startswith(("/v1/", "/api/v1/llm")):
            service = "llm"
        elif path.startswith("/api/v1/documents"):
            service = "documents"
    if service == "llm":
        return "llm"
    if service == "documents":
        return "documents:read" if read else "documents:write"
    return None


def key_address(scope: Any, settings: ServiceSettings) -> str:
    """The client's address for the resolution throttle: from X-Forwarded-For only when the peer is
    a proxy this service trusts (its TRUSTED_PROXIES, else loopback and private networks)."""
    proxies: TrustedProxies | None = getattr(settings, "proxies", None)
    if not isinstance(proxies, TrustedProxies):
        proxies = TrustedProxies.from_networks(PRIVATE_NETWORKS)
    return client_address(scope, proxies)


KeySource = Callable[[str, str], Awaitable[KeyGrant]]


class KeyResolver:
    """Resolves keys for one service, with a short cache (in process, then shared)."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        kv: KeyValue | None = None,
    ) -> None:
        self.settings = settings
        self.ttl = settings.api_key_cache_seconds
        self._secret = settings.internal_token_secret.get_secret_value()
        self._local: dict[str, tuple[float, KeyGrant]] = {}
        self._own_kv = kv is None
        self.kv = kv or KeyValue.for_settings(settings, CACHE_NAMESPACE)
        import httpx

        self._http = httpx.AsyncClient(
            base_url=settings.auth_url,
            timeout=httpx.Timeout(2.0, connect=1.0),
            transport=transport,
            trust_env=False,
            verify=tls_context(),
        )
        self._inflight: dict[str, asyncio.Future[KeyGrant]] = {}

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._own_kv:
            await self.kv.close()

    def forget(self) -> None:
        self._local.clear()

    async def resolve(self, key: str, address: str) -> KeyGrant:
        """The grant of ``key`` (a 401 for any key that is not a valid one; expiry checked here)."""
        if not well_formed(key):
            raise invalid_key()
        digest = key_hash(key)
        grant = await self._cached(digest)
        if grant is None:
            grant = await self._fetch_once(digest, KEY_RESOLVE_PATH, {"hash": digest, "address": address})
        if grant.expired():
            raise invalid_key()
        return grant

    async def resolve_id(self, key_id: str, user_id: str) -> KeyGrant:
        """The grant of the key with id ``key_id`` of user ``user_id``, for a service that acts with
        the key a user presented elsewhere (documents calling llm): same cache, same expiry check,
        and a 401 unless the key is a live key of that user."""
        if not valid_key_id(key_id):
            raise invalid_key()
        name = f"id:{key_id}"
        grant = await self._cached(name)
        if grant is None:
            grant = await self._fetch_once(name, KEY_GRANT_PATH, {"key_id": key_id, "user_id": user_id})
        if grant.user_id != user_id or grant.expired():
            raise invalid_key()
        return grant

    async def _cached(self, digest: str) -> KeyGrant | None:
        now = time.monotonic()
        hit = self._local.get(digest)
        if hit is not None:
            if hit[0] > now:
                return hit[1]
            del self._local[digest]
        if not self.kv.configured or self.ttl <= 0:
            return None
        try:
            raw = await self.kv.get(digest)
        except StoreUnavailable:
            return None
        if raw is None:
            return None
        try:
            grant = KeyGrant.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError):
            return None
        self._remember(digest, grant, shared=False)
        return grant

    def _remember(self, digest: str, grant: KeyGrant, *, shared: bool) -> None:
        if self.ttl <= 0:
            return
        if len(self._local) > 10_000:
            self._local.clear()
        self._local[digest] = (time.monotonic() + self.ttl, grant)

    async def _fetch_once(self, digest: str, path: str, body: dict[str, str]) -> KeyGrant:
        """One request to auth per key at a time, however many requests wait for it; the grant is
        cached under ``digest``."""
        waiting = self._inflight.get(digest)
        if waiting is not None:
            return await asyncio.shield(waiting)
        future: asyncio.Future[KeyGrant] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            grant = await self._fetch(digest, path, body)
            future.set_result(grant)
            return grant
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        finally:
            self._inflight.pop(digest, None)

    async def _fetch(self, digest: str, path: str, body: dict[str, str]) -> KeyGrant:
        import httpx  # loaded already: this resolver's client made it

        try:
            resp = await self._http.post(path, json=body, headers={"Authorization": f"Bearer {self._secret}"})
        except httpx.HTTPError:
            raise ProblemError(
                503, "API keys cannot be checked right now; try again shortly.", headers={"Retry-After": "2"}
            ) from None
        if resp.status_code == 429:
            retry = resp.headers.get("retry-after", "60")
            raise ProblemError(
                429,
                "Too many invalid API keys from this address; try again later.",
                title="Too many requests",
                headers={"Retry-After": retry},
            )
        if resp.status_code in (401, 404):
            raise invalid_key()
        if resp.status_code != 200:
            raise ProblemError(
                503, "API keys cannot be checked right now; try again shortly.", headers={"Retry-After": "2"}
            )
        try:
            grant = KeyGrant.from_json(resp.json())
        except (ValueError, KeyError, TypeError):
            raise ProblemError(503, "API keys cannot be checked right now; try again shortly.") from None
        self._remember(digest, grant, shared=True)
        if self.kv.configured and self.ttl > 0:
            try:
                await self.kv.set(digest, json.dumps(grant.to_json()), ttl=self.ttl)
            except StoreUnavailable:
                pass
        return grant

    async def report_spend(self, spend: dict[str, float]) -> None:
        """Tell auth what keys spent (what its key list shows); raises on failure (caller retries)."""
        resp = await self._http.post(
            KEY_SPEND_PATH, json={"spend": spend}, headers={"Authorization": f"Bearer {self._secret}"}
        )
        resp.raise_for_status()
