"""CORS at the gateway: listed origins and regex-matching origins get credentials; others get nothing."""

from __future__ import annotations

import pytest

from tests.asgi import asgi_client
from ultrai_gateway.main import build
from ultrai_gateway.settings import GatewaySettings

LISTED = "https://app.ultrai.example"
PREVIEW = "https://ultrai-git-feature-x.vercel.app"


def gateway():
    return build(
        GatewaySettings(
            cors_origins=[LISTED],
            cors_origin_regex=r"https://ultrai-[a-z0-9-]+\.vercel\.app",
            auth_url="http://127.0.0.1:9",
            documents_url="http://127.0.0.1:9",
            llm_url="http://127.0.0.1:9",
        )
    )


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }


@pytest.mark.parametrize("origin", [LISTED, PREVIEW])
async def test_preflight_allowed_for_listed_and_matching_origins(origin: str) -> None:
    async with asgi_client(gateway()) as client:
        resp = await client.options("/api/v1/auth/login", headers=preflight(origin))
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == origin
    assert resp.headers["access-control-allow-credentials"] == "true"
    assert "POST" in resp.headers["access-control-allow-methods"]


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "https://ultrai-x.vercel.app.evil.example",  # the regex must match the whole origin
        "https://app.ultrai.example.evil.example",
        "null",
    ],
)
async def test_preflight_refused_for_other_origins(origin: str) -> None:
    async with asgi_client(gateway()) as client:
        resp = await client.options("/api/v1/auth/login", headers=preflight(origin))
    assert resp.status_code == 400
    assert resp.headers["content-type"] == "application/problem+json"
    assert "access-control-allow-origin" not in resp.headers
    assert "access-control-allow-credentials" not in resp.headers
    assert resp.headers["x-request-id"]


async def test_simple_request_from_unlisted_origin_gets_no_cors_headers() -> None:
    async with asgi_client(gateway()) as client:
        resp = await client.get("/live", headers={"Origin": "https://evil.example"})
        ok = await client.get("/live", headers={"Origin": LISTED})
    assert resp.status_code == 200
    assert "access-control-allow-origin" not in resp.headers
    assert ok.headers["access-control-allow-origin"] == LISTED
    assert ok.headers["access-control-allow-credentials"] == "true"


def test_wildcard_origin_with_credentials_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="not allowed with credentials"):
        GatewaySettings(cors_origins="*")


def test_origins_accept_a_comma_separated_list() -> None:
    settings = GatewaySettings(cors_origins="https://a.example, https://b.example/")
    assert settings.cors_origins == ["https://a.example", "https://b.example"]


def test_upstream_urls_accept_render_hostport() -> None:
    assert GatewaySettings(auth_url="ultrai-auth:10000").auth_url == "http://ultrai-auth:10000"
