"""Request and response bodies of the API key routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ultrai_auth.models import ApiKey

Scope = Literal["llm", "documents:read", "documents:write"]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    # What the key may do; none given means all of them.
    scopes: list[Scope] | None = Field(None, max_length=3)
    expires_in_days: int | None = Field(None, ge=1, le=3650)
    # USD the key may spend per UTC day (the llm service refuses with 402 beyond it).
    budget_usd: float | None = Field(None, gt=0, le=1_000_000)
    rpm: int | None = Field(None, ge=1, le=1_000_000)
    tpm: int | None = Field(None, ge=1, le=100_000_000)


class KeyInfo(BaseModel):
    """A key as listed: never the key itself, only its display prefix."""

    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    spent_usd: float
    budget_usd: float | None
    rpm: int | None
    tpm: int | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyInfo:
        return cls(
            id=key.id,
            name=key.name,
            prefix=f"uai_{key.id}_",
            scopes=key.scopes.split(),
            created_at=key.created_at,
            expires_at=key.expires_at,
            last_used_at=key.last_used_at,
            spent_usd=round(key.spent_usd, 8),
            budget_usd=key.budget_usd,
            rpm=key.rpm,
            tpm=key.tpm,
        )


class NewKey(KeyInfo):
    """A key just made: ``key`` is shown this once and never again."""

    key: str


class KeyList(BaseModel):
    keys: list[KeyInfo]


class KeyResolve(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    address: str = Field(max_length=64)


class KeyOfUser(BaseModel):
    """A key named by its id, as a service acting for its user names it."""

    model_config = ConfigDict(extra="forbid")

    key_id: str = Field(pattern=r"^[a-z0-9]{12}$")
    user_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")


class KeyGrantOut(BaseModel):
    key_id: str
    user_id: str
    scopes: list[str]
    expires_at: float | None
    budget_usd: float | None
    rpm: int | None
    tpm: int | None


class KeySpend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spend: dict[str, float] = Field(max_length=10_000)
