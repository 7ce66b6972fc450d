"""Settings base: every service's settings class derives from ServiceSettings.

Invalid or missing settings stop the process at start with one line naming the variable
(``load_settings``), never a traceback.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Environment = Literal["development", "test", "staging", "production"]

# Development default for INTERNAL_TOKEN_SECRET; auth refuses to start in production with it.
DEV_INTERNAL_TOKEN_SECRET = "dev-internal-token-secret-change-me-0123456789abcdef"  # noqa: S105


def split_list(value: Any) -> Any:
    """Accept a JSON list or a comma-separated string for list settings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


def service_url(value: str) -> str:
    """An upstream service's base URL; Render's private network gives host:port (``fromService ...
    property: hostport``), which becomes ``http://host:port``."""
    value = value.strip().rstrip("/")
    if "://" not in value:
        value = f"http://{value}"
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL or host:port")
    return value


# A list setting, given as a comma-separated string or a JSON list.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(split_list)]
# Another service's base URL, given as a URL or as Render's private ``host:port``.
ServiceURL = Annotated[str, AfterValidator(service_url)]


class ServiceSettings(BaseSettings):
    """What every service reads from its environment (the variables listed in .env.example)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    environment: Environment = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["auto", "json", "text"] = "auto"
    data_dir: Path = Path("data")

    database_url: str | None = None
    db_pool_size: int = Field(5, ge=1, le=100)
    db_max_overflow: int = Field(5, ge=0, le=100)
    db_pool_timeout: float = Field(5.0, gt=0, le=120)
    db_pool_recycle: int = Field(1800, ge=-1)
    db_pool_pre_ping: bool = True
    db_statement_timeout_ms: int = Field(15000, ge=0)

    redis_url: str | None = None
    redis_key_prefix: str = "ultrai"
    redis_timeout: float = Field(0.5, gt=0, le=30)
    # Connections per Redis client and how long a call waits for a free one (then: busy, not down).
    redis_max_connections: int = Field(50, ge=1, le=10_000)
    redis_pool_timeout: float = Field(1.0, gt=0, le=30)

    enable_metrics: bool = True
    # Seconds between returns of free heap memory to the system after bursts (0: never).
    memory_trim_seconds: float = Field(30.0, ge=0, le=3600)
    auth_url: ServiceURL = "http://127.0.0.1:8001"

    # Token verification (shared/tokens.py): every service checks tokens minted by auth.
    jwt_issuer: str = "ultrai-auth"
    jwt_audience: str = "ultrai"
    jwt_leeway_seconds: int = Field(30, ge=0, le=300)
    jwks_cache_seconds: int = Field(300, ge=1, le=86_400)
    jwks_refetch_interval: float = Field(5.0, ge=0, le=3600)
    revocation_poll_seconds: float = Field(1.0, ge=0, le=60)
    # How old auth's revocation list may be, when it is the only source, before tokens get 503.
    revocation_max_staleness_seconds: float = Field(5.0, gt=0, le=300)
    # The secret a service shows auth to obtain a service token (auth and its callers share it).
    internal_token_secret: SecretStr = SecretStr(DEV_INTERNAL_TOKEN_SECRET)
    # How long an API key's grant is reused before auth is asked again (revocation does not wait).
    api_key_cache_seconds: float = Field(5.0, ge=0, le=60)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url", "redis_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @property
    def is_production(self) -> bool:
        return self.environment in ("production", "staging")

    @property
    def json_logs(self) -> bool:
        if self.log_format == "auto":
            return self.is_production
        return self.log_format == "json"


class CorsSettings(ServiceSettings):
    """The browser origins allowed to call the API with credentials: the gateway's CORS, and the
    origins auth accepts its session cookie from (the two are set the same)."""

    # The frontend origins allowed, comma-separated.
    cors_origins: CommaList = Field(
        default_factory=lambda: ["http://localhost:3000", "http://localhost:5173", "http://127.0.0.1:5173"]
    )
    # A regular expression an allowed origin may fully match instead (preview deployments).
    cors_origin_regex: str | None = None

    def origin_allowed(self, origin: str | None) -> bool:
        """Whether a request's Origin is allowed (listed, or fully matching the regex), the same
        test Starlette's CORS middleware makes."""
        if not origin:
            return False
        if self.cors_origin_regex and re.fullmatch(self.cors_origin_regex, origin):
            return True
        return origin in self.cors_origins

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard(cls, value: list[str]) -> list[str]:
        # Credentials are allowed, so every allowed origin must be named: a wildcard would hand
        # cookies and tokens to any site. Patterns (preview deployments) go in CORS_ORIGIN_REGEX.
        if "*" in value:
            raise ValueError("'*' is not allowed with credentials; list origins or use CORS_ORIGIN_REGEX")
        return [origin.rstrip("/") for origin in value]

    @field_validator("cors_origin_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc})") from None
        return value or None


class DatabaseSettings(ServiceSettings):
    """The settings of a service that owns tables and migrations."""

    # Unset: development and tests migrate at start; production runs the migrate command before
    # deploy (Render's preDeployCommand), so several instances never migrate at once.
    migrate_on_start: bool | None = None

    @property
    def migrates_on_start(self) -> bool:
        return (not self.is_production) if self.migrate_on_start is None else self.migrate_on_start


class ErasingSettings(DatabaseSettings):
    """The settings of a service that holds data of accounts, and erases it when auth deletes one
    (shared.erasure)."""

    # Seconds between two asks to auth for the accounts deleted since, to erase their data (0: never).
    erasure_poll_seconds: float = Field(60.0, ge=0, le=86_400)


S = TypeVar("S", bound=ServiceSettings)


def describe_error(exc: ValidationError) -> str:
    """One line naming every bad variable and why, without echoing secret values."""
    parts = []
    for err in exc.errors():
        name = str(err["loc"][0]).upper() if err["loc"] else None
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            parts.append(f"{name} is required but not set")
        elif name is None:
            # A check across settings (a model validator): its message names the variables itself.
            parts.append(message)
        else:
            parts.append(f"{name}: {message}")
    return "; ".join(parts)


def load_settings(cls: type[S], service: str, **overrides: Any) -> S:
    """Build settings or stop the process with exit status 2 and one clear line on stderr."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        print(f"{service}: invalid setting: {describe_error(exc)}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
