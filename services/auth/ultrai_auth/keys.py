"""The Ed25519 signing key, its JWKS, and minting of access and service tokens.

The key comes from JWT_PRIVATE_KEY (a PKCS#8 PEM) or is derived from JWT_SIGNING_SECRET (HKDF-SHA256
to a 32-byte seed), and in development is generated on first start and kept in
DATA_DIR/auth-signing-key.pem (mode 0600). The ``kid`` is the RFC 7638 thumbprint of the public key.

Rotation: every public key the service has signed with is recorded in the ``signing_keys`` table; the
JWKS lists the current key and every earlier key retired less than a token lifetime (plus leeway)
ago, so tokens signed just before a rotation keep verifying until they expire.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.tokens import ACCESS_TYP, ALGORITHM, SERVICE_TYP, service_audience
from ultrai_auth.repository import AuthRepository
from ultrai_auth.settings import AuthSettings

KEY_FILE = "auth-signing-key.pem"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(public: Ed25519PublicKey) -> dict[str, str]:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = _b64(raw)
    # RFC 7638: the required members in lexicographic order, no whitespace.
    thumb = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
    kid = _b64(hashlib.sha256(thumb.encode()).digest())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": ALGORITHM, "use": "sig"}


def load_private_key(settings: AuthSettings) -> Ed25519PrivateKey:
    if settings.jwt_private_key is not None:
        key = serialization.load_pem_private_key(settings.jwt_private_key.get_secret_value().encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("JWT_PRIVATE_KEY must be an Ed25519 private key (PKCS#8 PEM)")
        return key
    if settings.jwt_signing_secret is not None:
        seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"ultrai-auth", info=b"jwt-ed25519-v1").derive(
            settings.jwt_signing_secret.get_secret_value().encode()
        )
        return Ed25519PrivateKey.from_private_bytes(seed)
    path = Path(settings.data_dir) / KEY_FILE
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    # Create exclusively so two processes starting together cannot each write their own key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_private_key(settings)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return key


@dataclass
class Signer:
    settings: AuthSettings
    private: Ed25519PrivateKey

    def __post_init__(self) -> None:
        self.jwk = public_jwk(self.private.public_key())
        self.kid = self.jwk["kid"]
        # Earlier keys still published (kid -> (jwk, until)); the lifespan adds them from the database.
        self.retired: dict[str, tuple[dict[str, str], float]] = {}

    def publish(self, jwk: dict[str, str], until: float) -> None:
        self.retired[jwk["kid"]] = (jwk, until)

    def jwks(self) -> dict[str, Any]:
        now = time.time()
        return {"keys": [self.jwk, *(jwk for jwk, until in self.retired.values() if until > now)]}

    def _sign(self, claims: dict[str, Any], typ: str) -> str:
        return jwt.encode(claims, self.private, algorithm=ALGORITHM, headers={"kid": self.kid, "typ": typ})

    def access_token(self, user_id: str, session_id: str, now: float | None = None) -> tuple[str, dict[str, Any]]:
        now = int(now if now is not None else time.time())
        claims = {
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "sub": user_id,
            "sid": session_id,
            "iat": now,
            "nbf": now,
            "exp": now + self.settings.access_token_ttl_seconds,
            "jti": secrets.token_urlsafe(16),
        }
        return self._sign(claims, ACCESS_TYP), claims

    def service_token(self, caller: str, audience: str) -> tuple[str, dict[str, Any]]:
        now = int(time.time())
        claims = {
            "iss": self.settings.jwt_issuer,
            "aud": service_audience(audience),
            "sub": f"service:{caller}",
            "iat": now,
            "nbf": now,
            "exp": now + self.settings.service_token_ttl_seconds,
            "jti": secrets.token_urlsafe(16),
        }
        return self._sign(claims, SERVICE_TYP), claims

    @property
    def retention_seconds(self) -> int:
        """How long a retired key stays published: the longest token lifetime plus leeway."""
        return (
            max(self.settings.access_token_ttl_seconds, self.settings.service_token_ttl_seconds)
            + self.settings.jwt_leeway_seconds
            + 60
        )


async def publish_keys(repository: AuthRepository, signer: Signer) -> None:
    """Record the current key, retire the others, and publish those still within a token lifetime
    (the caller commits)."""
    now = time.time()
    current = await repository.signing_key(signer.kid)
    if current is None:
        await repository.add_signing_key(signer.kid, json.dumps(signer.jwk), now)
    elif current.retired_at is not None:
        current.retired_at = None
    await repository.retire_signing_keys_except(signer.kid, now)
    for key in await repository.signing_keys_retired_after(now - signer.retention_seconds):
        if key.kid != signer.kid and key.retired_at is not None:
            signer.publish(json.loads(key.jwk), until=key.retired_at + signer.retention_seconds)
