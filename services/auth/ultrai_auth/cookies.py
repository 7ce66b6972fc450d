"""The refresh token in a cookie, for browsers (IETF OAuth 2.0 for Browser-Based Applications, the
token-mediating pattern): JavaScript never reads it (HttpOnly), it travels only over HTTPS (Secure
and the ``__Secure-`` prefix) and only to the auth routes (Path).

A request that carries its refresh token only in the cookie must come from an allowed origin (the
gateway's CORS_ORIGINS / CORS_ORIGIN_REGEX): the browser sends the cookie with requests any site
starts, but always names the site in ``Origin`` on a POST, so a missing or foreign one is refused
(403) before the token is looked at.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Response

from shared.errors import ProblemError
from ultrai_auth.settings import AuthSettings
from ultrai_auth.successors import Grant

REFRESH_COOKIE = "__Secure-ultrai-refresh"
# The auth routes (routes.PREFIX): the cookie is sent nowhere else.
COOKIE_PATH = "/api/v1/auth"
_SAMESITE = {"lax": "Lax", "strict": "Strict", "none": "None"}


@dataclass(frozen=True)
class CookieCredential:
    """The refresh-token cookie of a request (if any), and whether the request's Origin may use it."""

    token: str | None
    origin_allowed: bool


def presented_refresh_token(body_token: str | None, cookie: CookieCredential) -> tuple[str | None, bool]:
    """The refresh token a request presents, and whether it came from the cookie. The body's wins;
    the cookie's only from an allowed origin (403 otherwise, before anything is looked up)."""
    if body_token is not None:
        return body_token, False
    if cookie.token is None:
        return None, False
    if not cookie.origin_allowed:
        raise ProblemError(
            403,
            "The session cookie is accepted only from an allowed Origin.",
            title="Forbidden",
        )
    return cookie.token, True


def _cookie(value: str, max_age: int, settings: AuthSettings) -> str:
    # Secure is always set: the __Secure- prefix requires it, and so does SameSite=None.
    samesite = _SAMESITE[settings.refresh_cookie_samesite]
    return f"{REFRESH_COOKIE}={value}; Max-Age={max_age}; Path={COOKIE_PATH}; Secure; HttpOnly; SameSite={samesite}"


def set_refresh_cookie(response: Response, grant: Grant, settings: AuthSettings) -> None:
    """Put ``grant``'s refresh token in the cookie, for as long as the token lives."""
    response.headers.append("Set-Cookie", _cookie(grant.refresh_token, grant.refresh_max_age(), settings))
    response.headers["Cache-Control"] = "no-store"


def clear_refresh_cookie(response: Response, settings: AuthSettings) -> None:
    """Tell the browser to drop the cookie (same name, Path and attributes, Max-Age=0)."""
    response.headers.append("Set-Cookie", _cookie("", 0, settings))
