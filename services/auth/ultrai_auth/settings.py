from __future__ import annotations

import hmac
import ipaddress
import re
from functools import cached_property
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from shared.net import TrustedProxies
from shared.settings import DEV_INTERNAL_TOKEN_SECRET, CommaList, CorsSettings, DatabaseSettings

# OWASP Password Storage Cheat Sheet, argon2id minimum: m=19 MiB, t=2, p=1.
OWASP_MEMORY_KIB = 19 * 1024
OWASP_TIME_COST = 2
OWASP_PARALLELISM = 1
# A service's name, as services name themselves to auth (service tokens, erasures).
SERVICE_NAME = r"[a-z][a-z0-9-]{0,31}"


class AuthSettings(DatabaseSettings, CorsSettings):
    """Auth's settings; CORS_ORIGINS and CORS_ORIGIN_REGEX (``CorsSettings``) name the origins
    allowed to use the refresh-token cookie, as at the gateway (keep them equal)."""

    # Signing key (Ed25519). In production one of these must be set; in development a key is
    # generated on first start and kept in DATA_DIR/auth-signing-key.pem.
    jwt_private_key: SecretStr | None = None  # a PKCS#8 PEM
    jwt_signing_secret: SecretStr | None = None  # a random secret (e.g. Render's generateValue)
    access_token_ttl_seconds: int = Field(900, ge=60, le=3600)
    service_token_ttl_seconds: int = Field(300, ge=30, le=900)
    refresh_token_ttl_seconds: int = Field(30 * 86_400, ge=300, le=365 * 86_400)
    # Seconds during which a refresh token presented again gets the successor it was already
    # exchanged for (concurrent refreshes from several tabs), instead of ending the session; 0: off.
    refresh_reuse_interval_seconds: float = Field(5.0, ge=0, le=60)

    # Browsers: the SameSite attribute of the refresh-token cookie (none for a frontend on another site).
    refresh_cookie_samesite: Literal["lax", "strict", "none"] = "lax"

    # argon2id; tests may lower the cost, production refuses anything under OWASP's minimum.
    argon2_memory_kib: int = Field(OWASP_MEMORY_KIB, ge=8, le=4 * 1024 * 1024)
    argon2_time_cost: int = Field(OWASP_TIME_COST, ge=1, le=20)
    argon2_parallelism: int = Field(OWASP_PARALLELISM, ge=1, le=16)
    # How many hashes run at once (memory bound: this × ARGON2_MEMORY_KIB) and how many may wait.
    hash_concurrency: int = Field(2, ge=1, le=64)
    hash_queue: int = Field(64, ge=0, le=10_000)
    # Nice value added to the hashing threads (Linux: per thread), so the event loop wins the CPU; 0: off.
    hash_thread_nice: int = Field(10, ge=0, le=19)
    # Each hash reuses the memory of the one before instead of mapping and faulting it in anew (a
    # third less CPU per login); up to HASH_CONCURRENCY x ARGON2_MEMORY_KIB stays resident between
    # trims, and one hash's worth for good once logins have happened (+40 MB per worker measured).
    # Off by default: GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (render.yaml) saves most of that CPU
    # with the memory given back after each hash, where the kernel has transparent huge pages.
    hash_memory_reuse: bool = False

    password_min_length: int = Field(8, ge=8, le=64)

    # Login throttling ("N/period" in the `limits` notation).
    login_rate_per_address: str = "20/minute"
    # Attempts per account from addresses that have not logged into it before.
    login_attempts_per_account: str = "10/15 minutes"
    register_rate_per_address: str = "10/minute"
    # invalid API keys a client address may present before every key from it is refused for a while.
    api_key_failures_per_address: str = "20/minute"
    # how many live API keys an account may hold.
    api_keys_per_user: int = Field(50, ge=1, le=1000)
    # A client address that logged into an account is exempt from that account's failure limit for
    # this long, so an attacker cannot lock its owner out.
    known_address_days: int = Field(30, ge=0, le=365)
    # The services that hold data of an account (comma-separated): a deleted account is listed for
    # each of them until it reports the account's data erased (GET /api/v1/auth/erasures).
    erasure_services: CommaList = Field(default_factory=lambda: ["documents", "llm"])
    # Each service erases a deleted account twice: at once, and again this long after the deletion,
    # for what work already under way then (an llm call, an analysis) wrote after the first pass.
    # 0: once.
    erasure_repeat_seconds: float = Field(3600.0, ge=0, le=7 * 86_400)
    # Proxies whose X-Forwarded-For is believed (the gateway, Render's proxy); CIDRs or addresses.
    trusted_proxies: CommaList = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])

    @cached_property
    def proxies(self) -> TrustedProxies:
        return TrustedProxies.from_networks(self.trusted_proxies)

    @field_validator("erasure_services")
    @classmethod
    def _service_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(SERVICE_NAME, name):
                raise ValueError(f"{name!r} is not a service name (lower-case letters, digits, -)")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator(
        "login_rate_per_address",
        "login_attempts_per_account",
        "register_rate_per_address",
        "api_key_failures_per_address",
    )
    @classmethod
    def _limit(cls, value: str) -> str:
        from limits import parse

        parse(value)
        return value

    @model_validator(mode="after")
    def _test_limits(self) -> AuthSettings:
        # A test stack logs everyone in from 127.0.0.1: per-address limits there are generous unless
        # a test sets them (the throttling tests do).
        if self.environment == "test":
            for name in ("login_rate_per_address", "register_rate_per_address", "api_key_failures_per_address"):
                if name not in self.model_fields_set:
                    setattr(self, name, "1000/minute")
        return self

    @model_validator(mode="after")
    def _production(self) -> AuthSettings:
        if not self.is_production:
            return self
        if self.jwt_private_key is None and self.jwt_signing_secret is None:
            raise ValueError("JWT_PRIVATE_KEY or JWT_SIGNING_SECRET must be set in production")
        if self.jwt_signing_secret is not None and len(self.jwt_signing_secret.get_secret_value()) < 32:
            raise ValueError("JWT_SIGNING_SECRET must be at least 32 characters")
        if hmac.compare_digest(self.internal_token_secret.get_secret_value(), DEV_INTERNAL_TOKEN_SECRET):
            raise ValueError("INTERNAL_TOKEN_SECRET must be set in production")
        if len(self.internal_token_secret.get_secret_value()) < 32:
            raise ValueError("INTERNAL_TOKEN_SECRET must be at least 32 characters")
        if (
            self.argon2_memory_kib < OWASP_MEMORY_KIB
            or self.argon2_time_cost < OWASP_TIME_COST
            or self.argon2_parallelism < OWASP_PARALLELISM
        ):
            raise ValueError("ARGON2_* must be at least OWASP's m=19456 KiB, t=2, p=1 in production")
        return self
