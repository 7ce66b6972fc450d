"""Tokens signed the way the auth service signs them (EdDSA, a key id, ``typ`` at+jwt or
service+jwt), with the public half served as a JWKS to a verifier's ``jwks_source``; each test can
change exactly one thing about an otherwise valid token."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ISSUER, AUDIENCE = "ultrai-auth", "ultrai"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(private: Ed25519PrivateKey, kid: str) -> dict[str, str]:
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64(raw), "kid": kid, "alg": "EdDSA", "use": "sig"}


class TokenIssuer:
    """One signing key; ``jwks()`` counts its fetches and also publishes the keys in ``extra``."""

    def __init__(self, kid: str | None = None) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.kid = kid or "test-" + secrets.token_hex(4)
        self.fetches = 0
        self.extra: list[dict[str, str]] = []

    async def jwks(self) -> dict[str, Any]:
        self.fetches += 1
        return {"keys": [public_jwk(self.private, self.kid), *self.extra]}

    def claims(self, **changes: Any) -> dict[str, Any]:
        """Valid access-token claims for "user-1"; a change of None removes that claim."""
        now = int(time.time())
        base = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "user-1",
            "sid": "session-" + secrets.token_hex(6),
            "iat": now,
            "nbf": now,
            "exp": now + 900,
            "jti": "jti-" + secrets.token_hex(8),
        }
        base.update(changes)
        return {k: v for k, v in base.items() if v is not None}

    def token(self, typ: str = "at+jwt", key: Any = None, headers: dict[str, Any] | None = None, **changes: Any) -> str:
        head = {"kid": self.kid, "typ": typ, **(headers or {})}
        return jwt.encode(self.claims(**changes), key or self.private, algorithm="EdDSA", headers=head)

    def headers(self, user_id: str) -> dict[str, str]:
        """An Authorization header with a valid access token for ``user_id``."""
        return {"Authorization": f"Bearer {self.token(sub=user_id)}"}
