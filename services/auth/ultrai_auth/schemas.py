"""The auth API's request and response bodies."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from ultrai_auth.models import User
from ultrai_auth.passwords import MAX_PASSWORD_CHARS
from ultrai_auth.settings import SERVICE_NAME

EMAIL_PATTERN = r"^\s*[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+\s*$"
SERVICE_PATTERN = f"^{SERVICE_NAME}$"
# An account's id as auth makes it (a UUID).
USER_ID_PATTERN = r"^[0-9a-f-]{36}$"


# ---- requests ---------------------------------------------------------------------------------
class Body(BaseModel):
    # Unknown fields are refused (422), and the schema says so.
    model_config = ConfigDict(extra="forbid")


class EmailPassword(Body):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


COOKIE = "Put the refresh token in the HttpOnly session cookie instead of the answer (browsers)."


class Credentials(EmailPassword):
    cookie: bool = Field(False, description=COOKIE)


class Registration(EmailPassword):
    # Surrounding blanks are trimmed; the address is lower-cased before it is stored.
    email: str = Field(min_length=3, max_length=254, pattern=EMAIL_PATTERN)


class RefreshRequest(Body):
    # Without it, the session cookie's (from an allowed Origin only).
    refresh_token: str | None = Field(None, min_length=1, max_length=4096)
    cookie: bool = Field(False, description=COOKIE)


class LogoutRequest(Body):
    # Without it, the session cookie's (from an allowed Origin only).
    refresh_token: str | None = Field(None, min_length=1, max_length=4096)


class PasswordChange(Body):
    current_password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)
    new_password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


class PasswordConfirm(Body):
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


class ServiceTokenRequest(Body):
    service: str = Field(pattern=SERVICE_PATTERN)
    audience: str = Field(pattern=SERVICE_PATTERN)


class ErasuresDone(Body):
    """A service's report: it holds nothing more of these deleted accounts."""

    service: str = Field(pattern=SERVICE_PATTERN)
    user_ids: list[Annotated[str, Field(pattern=USER_ID_PATTERN)]] = Field(min_length=1, max_length=1000)


# ---- responses --------------------------------------------------------------------------------
class TokenPair(BaseModel):
    access_token: str
    # Absent when it was put in the session cookie.
    refresh_token: str | None = None
    token_type: str = "Bearer"  # noqa: S105 (the scheme name)
    expires_in: int


class PendingErasures(BaseModel):
    """Deleted accounts whose data the service named has still to erase, oldest deletion first."""

    user_ids: list[str]


class ServiceToken(BaseModel):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 (the scheme name)
    expires_in: int


class Account(BaseModel):
    id: str
    email: str
    created_at: float

    @classmethod
    def of(cls, user: User) -> Account:
        return cls(id=user.id, email=user.email, created_at=user.created_at)
