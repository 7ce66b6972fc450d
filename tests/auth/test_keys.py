"""Signing keys and the JWKS: tokens verify with a second, independent JOSE library (joserfc) that
reads only the public JWKS; a rotated key stays published and verifies its unexpired tokens; the key
is persisted on first start, and taken from settings (PEM or secret) in production; service tokens
reach other services through ServiceTokenSource."""

from __future__ import annotations

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from shared.errors import ProblemError
from shared.settings import ServiceSettings
from shared.tokens import ServiceTokenSource, TokenVerifier
from tests.support.users import bearer, register_and_login
from ultrai_auth.keys import KEY_FILE, Signer, load_private_key
from ultrai_auth.settings import AuthSettings


def pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


async def test_tokens_verify_with_joserfc_reading_only_the_public_jwks(auth_client) -> None:
    async with auth_client() as client:
        _, tokens = await register_and_login(client)
        jwks = (await client.get("/.well-known/jwks.json")).json()
    assert jwks["keys"] and all("d" not in key for key in jwks["keys"])  # public halves only
    keyset = KeySet.import_key_set(jwks)
    token = jose_jwt.decode(tokens["access_token"], keyset, algorithms=["EdDSA"])
    assert token.header["alg"] == "EdDSA" and token.header["typ"] == "at+jwt"
    assert token.header["kid"] in {key["kid"] for key in jwks["keys"]}
    JWTClaimsRegistry(
        iss={"essential": True, "value": "ultrai-auth"},
        aud={"essential": True, "value": "ultrai"},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        nbf={"essential": True},
        jti={"essential": True},
    ).validate(token.claims)
    assert token.claims["exp"] - token.claims["iat"] == 900


async def test_jwks_is_served_with_a_cache_lifetime(auth_client) -> None:
    async with auth_client() as client:
        resp = await client.get("/.well-known/jwks.json")
    assert resp.status_code == 200
    assert "max-age=300" in resp.headers["cache-control"]
    (key,) = resp.json()["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["alg"] == "EdDSA" and key["use"] == "sig"


async def test_a_rotated_key_still_verifies_its_unexpired_tokens(auth_client) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    async with auth_client(jwt_private_key=pem(old)) as client:
        _, tokens = await register_and_login(client)
    # Restart with a new key on the same database: the old public key stays published.
    async with auth_client(jwt_private_key=pem(new)) as client:
        jwks = (await client.get("/.well-known/jwks.json")).json()
        assert len(jwks["keys"]) == 2
        assert (await client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"]))).status_code == 200
        # A separate service's verifier, fetching the JWKS over HTTP from auth:
        settings = ServiceSettings(environment="test")
        verifier = TokenVerifier(settings, "documents", transport=httpx.ASGITransport(app=client.app))
        try:
            assert (await verifier.verify_signature(tokens["access_token"]))["iss"] == "ultrai-auth"
            _, fresh = await register_and_login(client)
            assert (await verifier.verify_signature(fresh["access_token"]))["sub"]
        finally:
            await verifier.aclose()
        kids = [jwt.get_unverified_header(t["access_token"])["kid"] for t in (tokens, fresh)]
        assert kids[0] != kids[1] and set(kids) == {key["kid"] for key in jwks["keys"]}


async def test_a_retired_key_is_dropped_after_the_token_lifetime(auth_client, auth_env) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    async with auth_client(jwt_private_key=pem(old)):
        pass
    async with auth_client(jwt_private_key=pem(new)) as client:
        signer: Signer = client.app.state.signer
        (old_kid,) = [kid for kid in signer.retired]
        jwk, _ = signer.retired[old_kid]
        signer.publish(jwk, until=0)  # as if its retention had passed
        keys = (await client.get("/.well-known/jwks.json")).json()["keys"]
        assert [key["kid"] for key in keys] == [signer.kid]


def test_the_key_is_generated_once_and_persisted(tmp_dir) -> None:
    settings = AuthSettings(environment="test", data_dir=tmp_dir)
    first = load_private_key(settings)
    assert (tmp_dir / KEY_FILE).stat().st_mode & 0o077 == 0  # readable by the owner only
    again = load_private_key(settings)
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert first.public_key().public_bytes(*raw) == again.public_key().public_bytes(*raw)


def test_a_key_derived_from_a_secret_is_stable_and_secret_specific(tmp_dir) -> None:
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    one = load_private_key(AuthSettings(data_dir=tmp_dir, jwt_signing_secret="a" * 40)).public_key()
    two = load_private_key(AuthSettings(data_dir=tmp_dir, jwt_signing_secret="a" * 40)).public_key()
    other = load_private_key(AuthSettings(data_dir=tmp_dir, jwt_signing_secret="b" * 40)).public_key()
    assert one.public_bytes(*raw) == two.public_bytes(*raw) != other.public_bytes(*raw)
    assert not (tmp_dir / KEY_FILE).exists()  # nothing written when the key comes from settings


async def test_service_token_source_gets_tokens_another_service_accepts(auth_client) -> None:
    async with auth_client() as client:
        transport = httpx.ASGITransport(app=client.app)
        settings = ServiceSettings(environment="test")
        source = ServiceTokenSource(settings, "documents", "llm", transport=transport)
        llm = TokenVerifier(settings, "llm", transport=transport)
        documents = TokenVerifier(settings, "documents", transport=transport)
        try:
            token = await source()
            assert await source() == token  # cached
            claims = await llm.verify(token, "service")
            assert claims["sub"] == "service:documents" and claims["aud"] == "ultrai-llm"
            assert claims["exp"] - claims["iat"] == 300
            # Meant for llm: documents refuses it, and it is never an access token.
            for verifier, typ in ((documents, "service"), (llm, "access")):
                with pytest.raises(ProblemError) as info:
                    await verifier.verify(token, typ)
                assert info.value.status == 401
        finally:
            await source.aclose()
            await llm.aclose()
            await documents.aclose()
