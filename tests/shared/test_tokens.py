"""shared/tokens.py: every forged, stale, misdirected or malformed token is a 401, never a 500.

Security checklist section A (1-12). Tokens are signed here with a key whose public half is the
verifier's JWKS, so each test changes exactly one thing about an otherwise valid token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, FastAPI

from shared.errors import ProblemError, install_error_handlers
from shared.kv import KeyValue
from shared.settings import ServiceSettings
from shared.tokens import Principal, RevocationStore, TokenVerifier, current_service, current_user
from tests.asgi import asgi_client

ISS, AUD = "ultrai-auth", "ultrai"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk_of(private: Ed25519PrivateKey, kid: str) -> dict[str, str]:
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64(raw), "kid": kid, "alg": "EdDSA", "use": "sig"}


class Keys:
    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.kid = "test-key-1"
        self.fetches = 0
        self.extra: list[dict[str, str]] = []

    async def jwks(self) -> dict[str, Any]:
        self.fetches += 1
        return {"keys": [jwk_of(self.private, self.kid), *self.extra]}

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        base = {
            "iss": ISS,
            "aud": AUD,
            "sub": "user-1",
            "sid": "session-1",
            "iat": now,
            "nbf": now,
            "exp": now + 900,
            "jti": "jti-" + str(now) + str(id(changes)),
        }
        base.update(changes)
        return {k: v for k, v in base.items() if v is not None}

    def token(self, typ: str = "at+jwt", key: Any = None, headers: dict[str, Any] | None = None, **changes: Any) -> str:
        head = {"kid": self.kid, "typ": typ, **(headers or {})}
        return jwt.encode(self.claims(**changes), key or self.private, algorithm="EdDSA", headers=head)


def raw_token(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    enc = lambda obj: b64(json.dumps(obj, separators=(",", ":")).encode())  # noqa: E731
    return f"{enc(header)}.{enc(payload)}.{b64(signature)}"


def sign_raw(header: dict[str, Any], payload: dict[str, Any], private: Ed25519PrivateKey) -> str:
    """A token signed by our key with any header at all (PyJWT refuses to write some we test)."""
    unsigned = raw_token(header, payload).rsplit(".", 1)[0]
    return f"{unsigned}.{b64(private.sign(unsigned.encode()))}"


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
async def verifier(keys: Keys) -> Iterator[TokenVerifier]:
    settings = ServiceSettings(environment="test", jwks_refetch_interval=60)
    store = RevocationStore(KeyValue(None, service="revoked"))
    v = TokenVerifier(settings, "documents", jwks_source=keys.jwks, revocations=store)
    yield v
    await v.aclose()


async def refused(verifier: TokenVerifier, token: str, typ: str = "access") -> None:
    with pytest.raises(ProblemError) as info:
        await verifier.verify(token, typ)  # type: ignore[arg-type]
    assert info.value.status == 401
    assert info.value.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_valid_access_token_verifies(verifier, keys) -> None:
    claims = await verifier.verify(keys.token())
    assert claims["sub"] == "user-1" and claims["aud"] == AUD


async def test_a_token_signed_with_any_header_verifies_when_the_header_is_right(verifier, keys) -> None:
    # The control for the tests that use sign_raw: what they refuse is the header, not the signing.
    token = sign_raw({"alg": "EdDSA", "typ": "at+jwt", "kid": keys.kid}, keys.claims(), keys.private)
    assert (await verifier.verify(token))["sub"] == "user-1"


async def test_a_valid_service_token_verifies_for_its_audience_only(verifier, keys) -> None:
    token = keys.token("service+jwt", sub="service:llm", aud="ultrai-documents", sid=None)
    assert (await verifier.verify(token, "service"))["sub"] == "service:llm"
    await refused(verifier, keys.token("service+jwt", sub="service:llm", aud="ultrai-llm", sid=None), "service")


async def test_no_token(verifier) -> None:
    await refused(verifier, "")


async def test_garbage(verifier) -> None:
    await refused(verifier, "garbage")


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", "noNE"])
async def test_alg_none_with_an_empty_signature(verifier, keys, alg: str) -> None:
    await refused(verifier, raw_token({"alg": alg, "typ": "at+jwt", "kid": keys.kid}, keys.claims()))


@pytest.mark.parametrize("alg", ["eddsa", "EDDSA", "EdDsa"])
async def test_alg_in_another_case(verifier, keys, alg: str) -> None:
    # Signed by our own key: only the spelling of "alg" is wrong.
    await refused(verifier, sign_raw({"alg": alg, "typ": "at+jwt", "kid": keys.kid}, keys.claims(), keys.private))


async def test_hs256_signed_with_the_public_key(verifier, keys) -> None:
    public = keys.private.public_key()
    for material in (
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        json.dumps(jwk_of(keys.private, keys.kid)).encode(),
    ):
        header = {"alg": "HS256", "typ": "at+jwt", "kid": keys.kid}
        unsigned = raw_token(header, keys.claims()).rsplit(".", 1)[0]
        mac = hmac.new(material, unsigned.encode(), hashlib.sha256).digest()
        await refused(verifier, f"{unsigned}.{b64(mac)}")


@pytest.mark.parametrize("alg", ["HS512", "RS256", "ES256"])
async def test_valid_signature_with_an_algorithm_outside_the_allowlist(verifier, keys, alg: str) -> None:
    key: Any
    if alg == "HS512":
        key = b"k" * 64
    elif alg == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(keys.claims(), key, algorithm=alg, headers={"kid": keys.kid, "typ": "at+jwt"})
    await refused(verifier, token)


async def test_tampered_payload(verifier, keys) -> None:
    header, _, signature = keys.token().split(".")
    payload = b64(json.dumps(keys.claims(sub="someone-else")).encode())
    await refused(verifier, f"{header}.{payload}.{signature}")


async def test_signature_stripped(verifier, keys) -> None:
    header, payload, _ = keys.token().split(".")
    await refused(verifier, f"{header}.{payload}.")


async def test_signed_with_another_key(verifier, keys) -> None:
    await refused(verifier, keys.token(key=Ed25519PrivateKey.generate()))


async def test_expired(verifier, keys) -> None:
    now = int(time.time())
    await refused(verifier, keys.token(iat=now - 2000, nbf=now - 2000, exp=now - 100))


async def test_not_yet_valid(verifier, keys) -> None:
    now = int(time.time())
    await refused(verifier, keys.token(nbf=now + 600, exp=now + 1200))


async def test_issued_in_the_future(verifier, keys) -> None:
    now = int(time.time())
    await refused(verifier, keys.token(iat=now + 600, exp=now + 1200))


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "jti", "sub", "iss", "aud", "sid"])
async def test_a_missing_claim(verifier, keys, claim: str) -> None:
    await refused(verifier, keys.token(**{claim: None}))


@pytest.mark.parametrize("iss", ["evil-auth", "ultrai-aut", "ultrai-auth-evil", "ULTRAI-AUTH", ""])
async def test_wrong_iss(verifier, keys, iss: str) -> None:
    await refused(verifier, keys.token(iss=iss))


@pytest.mark.parametrize("aud", ["ultrai-llm", "ultra", "ultraix", ["ultrai", "ultrai-llm"], ["ultrai"]])
async def test_wrong_aud(verifier, keys, aud: Any) -> None:
    await refused(verifier, keys.token(aud=aud))


async def test_unknown_kid_refetches_the_jwks_at_most_once_per_interval(verifier, keys) -> None:
    await verifier.verify(keys.token())
    assert keys.fetches == 1
    await refused(verifier, keys.token(headers={"kid": "unknown-kid"}))
    assert keys.fetches == 2  # one refetch for the unknown kid
    await refused(verifier, keys.token(headers={"kid": "another-unknown"}))
    assert keys.fetches == 2  # rate-limited: no storm of fetches


async def test_a_new_key_is_found_by_refetching_on_its_kid(verifier, keys) -> None:
    await verifier.verify(keys.token())
    rotated = Ed25519PrivateKey.generate()
    keys.extra.append(jwk_of(rotated, "test-key-2"))
    token = keys.token(key=rotated, headers={"kid": "test-key-2"})
    assert (await verifier.verify(token))["sub"] == "user-1"


@pytest.mark.parametrize("kid", ["../../dev/null", "' OR '1'='1", "k" * 10_000, 42, None, ""])
async def test_hostile_kid(verifier, keys, kid: Any) -> None:
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": kid}
    if kid is None:
        del header["kid"]
    await refused(verifier, sign_raw(header, keys.claims(), keys.private))
    assert keys.fetches == 0  # refused before any key lookup


class Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        Recorder.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"keys": []}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def attacker_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("header", ["jku", "x5u", "jwk", "x5c"])
async def test_embedded_key_headers_are_ignored_and_fetch_nothing(verifier, keys, attacker_server, header) -> None:
    Recorder.hits = []
    attacker = Ed25519PrivateKey.generate()
    value: Any = {
        "jku": attacker_server + "/jwks.json",
        "x5u": attacker_server + "/cert.pem",
        "jwk": jwk_of(attacker, keys.kid),
        "x5c": [b64(b"not a certificate")],
    }[header]
    await refused(verifier, keys.token(key=attacker, headers={header: value}))
    assert Recorder.hits == []


async def test_unknown_crit_header(verifier, keys) -> None:
    await refused(verifier, keys.token(headers={"crit": ["exp-ext"], "exp-ext": True}))


async def test_missing_or_wrong_typ(verifier, keys) -> None:
    await refused(verifier, keys.token(typ="JWT"))
    await refused(verifier, keys.token(typ="AT+JWT"))
    await refused(verifier, sign_raw({"alg": "EdDSA", "kid": keys.kid}, keys.claims(), keys.private))


async def test_service_token_where_an_access_token_is_expected(verifier, keys) -> None:
    await refused(verifier, keys.token("service+jwt", sub="service:llm", aud=AUD, sid=None))


async def test_access_token_where_a_service_token_is_expected(verifier, keys) -> None:
    await refused(verifier, keys.token(aud="ultrai-documents"), "service")


async def test_a_service_subject_in_an_access_token(verifier, keys) -> None:
    await refused(verifier, keys.token(sub="service:llm"))


@pytest.mark.parametrize(
    "token",
    [
        "a.b",
        "a.b.c.d",
        "eyJ!!.eyJ$$.sig",
        '{"payload":"e30","signatures":[{"protected":"e30","signature":"AA"}]}',
        "x" * 1_000_000,
        "..",
        "é.é.é",
    ],
    ids=["2-segments", "4-segments", "not-base64url", "json-serialization", "1mb", "empty-segments", "non-ascii"],
)
async def test_malformed_tokens(verifier, token: str) -> None:
    await refused(verifier, token)


async def test_a_revoked_jti_session_or_user_is_refused(verifier, keys) -> None:
    for kind, value in (("jti", "jti-revoked"), ("sid", "session-revoked"), ("user", "user-deleted")):
        changes = {"jti": "jti-ok", "sid": "session-ok", "sub": "user-ok"}
        changes[{"jti": "jti", "sid": "sid", "user": "sub"}[kind]] = value
        token = keys.token(**changes)
        await verifier.verify(token)
        await verifier.revocations.revoke(kind, value, ttl=60)  # type: ignore[arg-type]
        await refused(verifier, token)


# ---- the FastAPI dependencies --------------------------------------------------------------------
def protected_app(verifier: TokenVerifier) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.state.verifier = verifier

    @app.get("/user")
    async def user(principal: Principal = Depends(current_user)) -> dict[str, Any]:
        return {"user": principal.user_id, "service": principal.service}

    @app.get("/service")
    async def service(principal: Principal = Depends(current_service)) -> dict[str, Any]:
        return {"service": principal.service}

    return app


async def test_current_user_and_current_service_dependencies(verifier, keys) -> None:
    service_token = keys.token("service+jwt", sub="service:llm", aud="ultrai-documents", sid=None)
    async with asgi_client(protected_app(verifier)) as client:
        assert (await client.get("/user")).status_code == 401
        assert (await client.get("/user", headers={"Authorization": "Bearer x.y.z"})).status_code == 401
        ok = await client.get("/user", headers={"Authorization": f"Bearer {keys.token()}"})
        assert ok.json() == {"user": "user-1", "service": None}
        # A service acting for a user must say for whom.
        bare = await client.get("/user", headers={"Authorization": f"Bearer {service_token}"})
        assert bare.status_code == 401
        acting = await client.get(
            "/user", headers={"Authorization": f"Bearer {service_token}", "X-On-Behalf-Of": "user-7"}
        )
        assert acting.json() == {"user": "user-7", "service": "llm"}
        assert (await client.get("/service", headers={"Authorization": f"Bearer {keys.token()}"})).status_code == 401
        svc = await client.get("/service", headers={"Authorization": f"Bearer {service_token}"})
        assert svc.json() == {"service": "llm"}


# ---- the auth service unreachable -----------------------------------------------------------------
class FlakyKeys(Keys):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def jwks(self) -> dict[str, Any]:
        if self.down:
            self.fetches += 1
            raise httpx.ConnectError("auth is down")
        return await super().jwks()  # counts the fetch


async def test_keys_never_fetched_answer_503_and_are_not_refetched_on_every_request() -> None:
    keys = FlakyKeys()
    keys.down = True
    store = RevocationStore(KeyValue(None, service="revoked"))
    verifier = TokenVerifier(ServiceSettings(environment="test"), "documents", jwks_source=keys.jwks, revocations=store)
    try:
        for _ in range(3):
            with pytest.raises(ProblemError) as info:
                await verifier.verify(keys.token())
            assert info.value.status == 503 and info.value.headers["Retry-After"]
        assert keys.fetches == 1  # one attempt, then a pause before the next
    finally:
        await verifier.aclose()


async def test_cached_keys_keep_serving_while_auth_is_down() -> None:
    keys = FlakyKeys()
    store = RevocationStore(KeyValue(None, service="revoked"))
    verifier = TokenVerifier(
        ServiceSettings(environment="test", jwks_cache_seconds=1), "documents", jwks_source=keys.jwks, revocations=store
    )
    try:
        await verifier.verify(keys.token())
        keys.down = True
        verifier._cache.next_fetch = 0  # the cache has expired
        for _ in range(3):
            assert (await verifier.verify(keys.token()))["sub"] == "user-1"
        assert keys.fetches == 2  # one failed refetch, then the old keys without waiting on auth
    finally:
        await verifier.aclose()
