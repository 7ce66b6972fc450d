"""shared/tokens.py: every forged, stale, misdirected or malformed token is a 401, never a 500.

The cases of RFC 8725 (JWT Best Current Practices) and RFC 7515/7519. Tokens are signed here with a
key whose public half is the verifier's JWKS, so each test changes exactly one thing about an
otherwise valid token.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from tests.support.tokens import AUDIENCE, ISSUER, TokenIssuer, b64, public_jwk

ISS, AUD = ISSUER, AUDIENCE


def raw_token(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    enc = lambda obj: b64(json.dumps(obj, separators=(",", ":")).encode())  # noqa: E731
    return f"{enc(header)}.{enc(payload)}.{b64(signature)}"


def sign_raw(header: dict[str, Any], payload: dict[str, Any], private: Ed25519PrivateKey) -> str:
    """A token signed by our key with any header at all (PyJWT refuses to write some we test)."""
    unsigned = raw_token(header, payload).rsplit(".", 1)[0]
    return f"{unsigned}.{b64(private.sign(unsigned.encode()))}"


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(kid="test-key-1")


@pytest.fixture
async def verifier(issuer: TokenIssuer) -> Iterator[TokenVerifier]:
    settings = ServiceSettings(environment="test", jwks_refetch_interval=60)
    store = RevocationStore(KeyValue(None, service="revoked"))
    v = TokenVerifier(settings, "documents", jwks_source=issuer.jwks, revocations=store)
    yield v
    await v.aclose()


async def refused(verifier: TokenVerifier, token: str, typ: str = "access") -> None:
    with pytest.raises(ProblemError) as info:
        await verifier.verify(token, typ)  # type: ignore[arg-type]
    assert info.value.status == 401
    assert info.value.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_valid_access_token_verifies(verifier, issuer) -> None:
    claims = await verifier.verify(issuer.token())
    assert claims["sub"] == "user-1" and claims["aud"] == AUD


async def test_a_token_signed_with_any_header_verifies_when_the_header_is_right(verifier, issuer) -> None:
    # The control for the tests that use sign_raw: what they refuse is the header, not the signing.
    token = sign_raw({"alg": "EdDSA", "typ": "at+jwt", "kid": issuer.kid}, issuer.claims(), issuer.private)
    assert (await verifier.verify(token))["sub"] == "user-1"


async def test_a_valid_service_token_verifies_for_its_audience_only(verifier, issuer) -> None:
    token = issuer.token("service+jwt", sub="service:llm", aud="ultrai-documents", sid=None)
    assert (await verifier.verify(token, "service"))["sub"] == "service:llm"
    await refused(verifier, issuer.token("service+jwt", sub="service:llm", aud="ultrai-llm", sid=None), "service")


async def test_no_token(verifier) -> None:
    await refused(verifier, "")


async def test_garbage(verifier) -> None:
    await refused(verifier, "garbage")


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", "noNE"])
async def test_alg_none_with_an_empty_signature(verifier, issuer, alg: str) -> None:
    await refused(verifier, raw_token({"alg": alg, "typ": "at+jwt", "kid": issuer.kid}, issuer.claims()))


@pytest.mark.parametrize("alg", ["eddsa", "EDDSA", "EdDsa"])
async def test_alg_in_another_case(verifier, issuer, alg: str) -> None:
    # Signed by our own key: only the spelling of "alg" is wrong.
    await refused(verifier, sign_raw({"alg": alg, "typ": "at+jwt", "kid": issuer.kid}, issuer.claims(), issuer.private))


async def test_hs256_signed_with_the_public_key(verifier, issuer) -> None:
    public = issuer.private.public_key()
    for material in (
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        json.dumps(public_jwk(issuer.private, issuer.kid)).encode(),
    ):
        header = {"alg": "HS256", "typ": "at+jwt", "kid": issuer.kid}
        unsigned = raw_token(header, issuer.claims()).rsplit(".", 1)[0]
        mac = hmac.new(material, unsigned.encode(), hashlib.sha256).digest()
        await refused(verifier, f"{unsigned}.{b64(mac)}")


@pytest.mark.parametrize("alg", ["HS512", "RS256", "ES256"])
async def test_valid_signature_with_an_algorithm_outside_the_allowlist(verifier, issuer, alg: str) -> None:
    key: Any
    if alg == "HS512":
        key = b"k" * 64
    elif alg == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(issuer.claims(), key, algorithm=alg, headers={"kid": issuer.kid, "typ": "at+jwt"})
    await refused(verifier, token)


async def test_tampered_payload(verifier, issuer) -> None:
    header, _, signature = issuer.token().split(".")
    payload = b64(json.dumps(issuer.claims(sub="someone-else")).encode())
    await refused(verifier, f"{header}.{payload}.{signature}")


async def test_signature_stripped(verifier, issuer) -> None:
    header, payload, _ = issuer.token().split(".")
    await refused(verifier, f"{header}.{payload}.")


async def test_signed_with_another_key(verifier, issuer) -> None:
    await refused(verifier, issuer.token(key=Ed25519PrivateKey.generate()))


async def test_expired(verifier, issuer) -> None:
    now = int(time.time())
    await refused(verifier, issuer.token(iat=now - 2000, nbf=now - 2000, exp=now - 100))


async def test_not_yet_valid(verifier, issuer) -> None:
    now = int(time.time())
    await refused(verifier, issuer.token(nbf=now + 600, exp=now + 1200))


async def test_issued_in_the_future(verifier, issuer) -> None:
    now = int(time.time())
    await refused(verifier, issuer.token(iat=now + 600, exp=now + 1200))


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "jti", "sub", "iss", "aud", "sid"])
async def test_a_missing_claim(verifier, issuer, claim: str) -> None:
    await refused(verifier, issuer.token(**{claim: None}))


@pytest.mark.parametrize("iss", ["evil-auth", "ultrai-aut", "ultrai-auth-evil", "ULTRAI-AUTH", ""])
async def test_wrong_iss(verifier, issuer, iss: str) -> None:
    await refused(verifier, issuer.token(iss=iss))


@pytest.mark.parametrize("aud", ["ultrai-llm", "ultra", "ultraix", ["ultrai", "ultrai-llm"], ["ultrai"]])
async def test_wrong_aud(verifier, issuer, aud: Any) -> None:
    await refused(verifier, issuer.token(aud=aud))


async def test_unknown_kid_refetches_the_jwks_at_most_once_per_interval(verifier, issuer) -> None:
    await verifier.verify(issuer.token())
    assert issuer.fetches == 1
    await refused(verifier, issuer.token(headers={"kid": "unknown-kid"}))
    assert issuer.fetches == 2  # one refetch for the unknown kid
    await refused(verifier, issuer.token(headers={"kid": "another-unknown"}))
    assert issuer.fetches == 2  # rate-limited: no storm of fetches


async def test_a_new_key_is_found_by_refetching_on_its_kid(verifier, issuer) -> None:
    await verifier.verify(issuer.token())
    rotated = Ed25519PrivateKey.generate()
    issuer.extra.append(public_jwk(rotated, "test-key-2"))
    token = issuer.token(key=rotated, headers={"kid": "test-key-2"})
    assert (await verifier.verify(token))["sub"] == "user-1"


@pytest.mark.parametrize("kid", ["../../dev/null", "' OR '1'='1", "k" * 10_000, 42, None, ""])
async def test_hostile_kid(verifier, issuer, kid: Any) -> None:
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": kid}
    if kid is None:
        del header["kid"]
    await refused(verifier, sign_raw(header, issuer.claims(), issuer.private))
    assert issuer.fetches == 0  # refused before any key lookup


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
async def test_embedded_key_headers_are_ignored_and_fetch_nothing(verifier, issuer, attacker_server, header) -> None:
    Recorder.hits = []
    attacker = Ed25519PrivateKey.generate()
    value: Any = {
        "jku": attacker_server + "/jwks.json",
        "x5u": attacker_server + "/cert.pem",
        "jwk": public_jwk(attacker, issuer.kid),
        "x5c": [b64(b"not a certificate")],
    }[header]
    await refused(verifier, issuer.token(key=attacker, headers={header: value}))
    assert Recorder.hits == []


async def test_unknown_crit_header(verifier, issuer) -> None:
    await refused(verifier, issuer.token(headers={"crit": ["exp-ext"], "exp-ext": True}))


async def test_missing_or_wrong_typ(verifier, issuer) -> None:
    await refused(verifier, issuer.token(typ="JWT"))
    await refused(verifier, issuer.token(typ="AT+JWT"))
    await refused(verifier, sign_raw({"alg": "EdDSA", "kid": issuer.kid}, issuer.claims(), issuer.private))


async def test_service_token_where_an_access_token_is_expected(verifier, issuer) -> None:
    await refused(verifier, issuer.token("service+jwt", sub="service:llm", aud=AUD, sid=None))


async def test_access_token_where_a_service_token_is_expected(verifier, issuer) -> None:
    await refused(verifier, issuer.token(aud="ultrai-documents"), "service")


async def test_a_service_subject_in_an_access_token(verifier, issuer) -> None:
    await refused(verifier, issuer.token(sub="service:llm"))


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


async def test_a_revoked_jti_session_or_user_is_refused(verifier, issuer) -> None:
    for kind, value in (("jti", "jti-revoked"), ("sid", "session-revoked"), ("user", "user-deleted")):
        changes = {"jti": "jti-ok", "sid": "session-ok", "sub": "user-ok"}
        changes[{"jti": "jti", "sid": "sid", "user": "sub"}[kind]] = value
        token = issuer.token(**changes)
        await verifier.verify(token)
        await verifier.revocations.revoke(kind, value, ttl=60)  # type: ignore[arg-type]
        await refused(verifier, token)


# ---- the cache of verified tokens ----------------------------------------------------------------
async def test_a_token_verified_once_is_not_checked_again_but_its_revocation_is(verifier, issuer, monkeypatch) -> None:
    decodes = 0
    decode = jwt.decode

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal decodes
        decodes += 1
        return decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counted)
    token = issuer.token()
    first = await verifier.verify(token)
    first["sub"] = "changed by a caller"  # what a caller does with its claims stays its own
    assert (await verifier.verify(token))["sub"] == "user-1"
    assert decodes == 1
    await verifier.revocations.revoke("jti", first["jti"], ttl=60)
    await refused(verifier, token)
    # An access token is not a service token because it was verified as one before.
    await refused(verifier, token, "service")


async def test_a_verified_token_is_refused_once_it_expires() -> None:
    issuer = TokenIssuer(kid="test-key-1")
    settings = ServiceSettings(environment="test", jwt_leeway_seconds=0)
    verifier = TokenVerifier(settings, "documents", jwks_source=issuer.jwks)
    try:
        now = time.time()
        token = issuer.token(iat=int(now), nbf=int(now), exp=int(now) + 1)
        await verifier.verify(token)
        await asyncio.sleep(int(now) + 1.05 - time.time())
        await refused(verifier, token)
    finally:
        await verifier.aclose()


async def test_a_verified_token_is_refused_once_its_key_leaves_the_jwks() -> None:
    issuer = TokenIssuer(kid="test-key-1")
    settings = ServiceSettings(environment="test", jwks_cache_seconds=1)
    verifier = TokenVerifier(settings, "documents", jwks_source=issuer.jwks)
    try:
        retired = Ed25519PrivateKey.generate()
        issuer.extra.append(public_jwk(retired, "test-key-2"))
        token = issuer.token(key=retired, headers={"kid": "test-key-2"})
        await verifier.verify(token)
        issuer.extra.clear()  # the key is retired: the next fetch of the keys no longer has it
        fetches = issuer.fetches
        while issuer.fetches == fetches:  # the cached keys are refetched after a second
            await asyncio.sleep(0.2)
            with contextlib.suppress(ProblemError):
                await verifier.verify(issuer.token())
        await refused(verifier, token)
    finally:
        await verifier.aclose()


async def test_the_cache_of_verified_tokens_is_bounded(verifier, issuer, monkeypatch) -> None:
    monkeypatch.setattr("shared.tokens.VERIFIED_CACHE_SIZE", 8)
    tokens = [issuer.token() for _ in range(20)]
    for token in tokens:
        await verifier.verify(token)
        assert len(verifier._verified) <= 8
    assert (await verifier.verify(tokens[0]))["sub"] == "user-1"  # forgotten, verified again


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


async def test_current_user_and_current_service_dependencies(verifier, issuer) -> None:
    service_token = issuer.token("service+jwt", sub="service:llm", aud="ultrai-documents", sid=None)
    async with asgi_client(protected_app(verifier)) as client:
        assert (await client.get("/user")).status_code == 401
        assert (await client.get("/user", headers={"Authorization": "Bearer x.y.z"})).status_code == 401
        ok = await client.get("/user", headers={"Authorization": f"Bearer {issuer.token()}"})
        assert ok.json() == {"user": "user-1", "service": None}
        # A service acting for a user must say for whom.
        bare = await client.get("/user", headers={"Authorization": f"Bearer {service_token}"})
        assert bare.status_code == 401
        acting = await client.get(
            "/user", headers={"Authorization": f"Bearer {service_token}", "X-On-Behalf-Of": "user-7"}
        )
        assert acting.json() == {"user": "user-7", "service": "llm"}
        assert (await client.get("/service", headers={"Authorization": f"Bearer {issuer.token()}"})).status_code == 401
        svc = await client.get("/service", headers={"Authorization": f"Bearer {service_token}"})
        assert svc.json() == {"service": "llm"}


# ---- the auth service unreachable -----------------------------------------------------------------
class FlakyIssuer(TokenIssuer):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def jwks(self) -> dict[str, Any]:
        if self.down:
            self.fetches += 1
            raise httpx.ConnectError("auth is down")
        return await super().jwks()  # counts the fetch


async def test_keys_never_fetched_answer_503_and_are_not_refetched_on_every_request() -> None:
    issuer = FlakyIssuer()
    issuer.down = True
    store = RevocationStore(KeyValue(None, service="revoked"))
    verifier = TokenVerifier(
        ServiceSettings(environment="test"), "documents", jwks_source=issuer.jwks, revocations=store
    )
    try:
        for _ in range(3):
            with pytest.raises(ProblemError) as info:
                await verifier.verify(issuer.token())
            assert info.value.status == 503 and info.value.headers["Retry-After"]
        assert issuer.fetches == 1  # one attempt, then a pause before the next
    finally:
        await verifier.aclose()


async def test_cached_keys_keep_serving_while_auth_is_down() -> None:
    issuer = FlakyIssuer()
    store = RevocationStore(KeyValue(None, service="revoked"))
    verifier = TokenVerifier(
        ServiceSettings(environment="test", jwks_cache_seconds=1),
        "documents",
        jwks_source=issuer.jwks,
        revocations=store,
    )
    try:
        await verifier.verify(issuer.token())
        issuer.down = True
        verifier._cache.next_fetch = 0  # the cache has expired
        for _ in range(3):
            assert (await verifier.verify(issuer.token()))["sub"] == "user-1"
        assert issuer.fetches == 2  # one failed refetch, then the old keys without waiting on auth
    finally:
        await verifier.aclose()


async def test_a_service_that_started_before_auth_verifies_as_soon_as_auth_answers(issuer) -> None:
    """Auth was not up at the first fetch of the keys; it is now. A request a moment later (well
    inside the pause after a failed fetch) is verified, not refused with 503 until the pause ends."""
    auth_up = False

    async def jwks() -> dict[str, Any]:
        if not auth_up:
            raise httpx.ConnectError("auth is starting")
        return await issuer.jwks()

    settings = ServiceSettings(environment="test")
    store = RevocationStore(KeyValue(None, service="revoked"))
    v = TokenVerifier(settings, "documents", jwks_source=jwks, revocations=store)
    try:
        with pytest.raises(ProblemError) as info:
            await v.verify(issuer.token())
        assert info.value.status == 503  # no key yet: auth really is unreachable
        auth_up = True
        await asyncio.sleep(0.3)  # past the short pause for a verifier with no key, inside the 1 s one
        claims = await v.verify(issuer.token())
        assert claims["sub"] == "user-1"
    finally:
        await v.aclose()
