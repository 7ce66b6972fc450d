"""The gateway as a browser on another origin sees it: CORS headers on every answer to an allowed
origin (those made before routing included), the OpenAI SDKs' headers allowed, the headers a
frontend reads exposed, paths with or without a trailing slash and never a redirect, service
addresses made relative, and a Cross-Origin-Resource-Policy that lets another site load downloads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.asgi import asgi_client
from tests.gateway.test_proxy_streaming import Sink
from ultrai_gateway.cors import EXPOSE_HEADERS
from ultrai_gateway.edge import is_public
from ultrai_gateway.main import build
from ultrai_gateway.settings import GatewaySettings

APP = "https://app.ultrai.example"
EVIL = "https://evil.example"
DEAD = "http://127.0.0.1:9"
CAP = 4096


def gateway(*, per_minute: int = 0, documents_url: str = DEAD, edge_auth: bool = True):
    return build(
        GatewaySettings(
            cors_origins=[APP],
            auth_url=DEAD,
            documents_url=documents_url,
            llm_url=DEAD,
            max_body_bytes=CAP,
            rate_limit_per_minute=per_minute,
            rate_limit_per_hour=0,
            edge_auth=edge_auth,
        )
    )


def assert_cors(resp, origin: str = APP) -> None:
    assert resp.headers["access-control-allow-origin"] == origin
    assert resp.headers["access-control-allow-credentials"] == "true"
    assert "Origin" in resp.headers["vary"]


def assert_no_cors(resp) -> None:
    assert not [name for name in resp.headers if name.lower().startswith("access-control-")], resp.headers


def assert_problem(resp, status: int) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["status"] == status
    assert body["request_id"] == resp.headers["x-request-id"]


# -- CORS on the answers made before routing -------------------------------------------------------


async def test_a_body_over_the_cap_gets_a_413_a_browser_can_read() -> None:
    async with asgi_client(gateway()) as client:
        resp = await client.post(
            "/api/v1/auth/login", content=b"x" * (CAP + 1), headers={"Origin": APP, "Content-Type": "application/json"}
        )
    assert_problem(resp, 413)
    assert_cors(resp)


async def test_headers_over_the_cap_get_a_431_a_browser_can_read() -> None:
    async with asgi_client(gateway()) as client:
        resp = await client.get("/api/v1/auth/me", headers={"Origin": APP, "X-Big": "a" * 40_000})
    assert_problem(resp, 431)
    assert_cors(resp)


async def test_the_rate_limit_429_carries_cors_and_exposes_its_headers() -> None:
    async with asgi_client(gateway(per_minute=1)) as client:
        await client.post("/api/v1/auth/login", json={}, headers={"Origin": APP})
        resp = await client.post("/api/v1/auth/login", json={}, headers={"Origin": APP})
    assert_problem(resp, 429)
    assert_cors(resp)
    exposed = {name.strip().lower() for name in resp.headers["access-control-expose-headers"].split(",")}
    assert {"retry-after", "ratelimit-policy", "x-request-id"} <= exposed
    assert resp.headers["retry-after"] and resp.headers["ratelimit-policy"]


async def test_a_service_down_503_carries_cors() -> None:
    async with asgi_client(gateway()) as client:
        resp = await client.post("/api/v1/auth/login", json={}, headers={"Origin": APP})
    assert_problem(resp, 503)
    assert_cors(resp)
    assert resp.headers["retry-after"]


async def test_the_exposed_headers_are_those_a_frontend_reads() -> None:
    async with asgi_client(gateway()) as client:
        resp = await client.get("/api/v1/auth/me", headers={"Origin": APP})
    assert_problem(resp, 401)
    assert_cors(resp)
    exposed = {name.strip().lower() for name in resp.headers["access-control-expose-headers"].split(",")}
    assert exposed == {name.lower() for name in EXPOSE_HEADERS}
    assert {
        "www-authenticate",
        "retry-after",
        "ratelimit-policy",
        "x-request-id",
        "location",
        "content-disposition",
    } <= exposed


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "/api/v1/auth/login", {"content": b"x" * (CAP + 1)}, 413),
        ("POST", "/api/v1/auth/login", {"json": {}}, 503),
        ("GET", "/api/v1/auth/me", {}, 401),
        ("GET", "/live", {}, 200),
    ],
)
async def test_a_refused_origin_gets_no_cors_headers(method: str, path: str, kwargs: dict, status: int) -> None:
    async with asgi_client(gateway()) as client:
        resp = await client.request(method, path, headers={"Origin": EVIL}, **kwargs)
    assert resp.status_code == status
    assert_no_cors(resp)
    assert "Origin" in resp.headers["vary"]


# -- preflights ------------------------------------------------------------------------------------


async def test_a_preflight_of_the_openai_sdk_headers_is_allowed() -> None:
    requested = "x-stainless-os, x-stainless-lang, openai-organization"
    async with asgi_client(gateway()) as client:
        resp = await client.options(
            "/v1/chat/completions",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": requested + ", authorization, content-type, openai-project",
            },
        )
    assert resp.status_code == 200, resp.text
    assert_cors(resp)
    allowed = {name.strip().lower() for name in resp.headers["access-control-allow-headers"].split(",")}
    assert {
        "x-stainless-os",
        "x-stainless-lang",
        "openai-organization",
        "openai-project",
        "authorization",
        "content-type",
    } <= allowed
    assert resp.headers["x-request-id"]


async def test_a_preflight_of_any_x_stainless_header_is_allowed_but_not_of_others() -> None:
    async with asgi_client(gateway()) as client:
        ok = await client.options(
            "/v1/models",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "x-stainless-retry-count, x-stainless-some-future-header",
            },
        )
        refused = await client.options(
            "/v1/models",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "x-stainless-os, x-not-allowed",
            },
        )
    assert ok.status_code == 200
    assert "x-stainless-some-future-header" in ok.headers["access-control-allow-headers"]
    assert_problem(refused, 400)
    assert "access-control-allow-origin" not in refused.headers


async def test_a_preflight_from_a_refused_origin_gets_no_allowance() -> None:
    async with asgi_client(gateway()) as client:
        resp = await client.options(
            "/api/v1/documents",
            headers={
                "Origin": EVIL,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-stainless-os",
            },
        )
    assert_problem(resp, 400)
    assert "access-control-allow-origin" not in resp.headers
    assert "access-control-allow-credentials" not in resp.headers


# -- trailing slashes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v1/auth/login/", "/api/v1/auth/register/", "/api/v1/auth/refresh/", "/api/v1/auth/logout/"]
)
async def test_public_paths_with_a_trailing_slash_are_public(path: str) -> None:
    async with asgi_client(gateway()) as client:
        resp = await client.post(path, json={}, headers={"Origin": APP})
    # past the edge token check: the (absent) auth service is what answers
    assert_problem(resp, 503)
    assert_cors(resp)


@pytest.mark.parametrize(
    "path", ["/api/v1/auth/me/", "/api/v1/documents/some-id/", "/api/v1/llm/models/", "/v1/models/"]
)
async def test_protected_paths_with_a_trailing_slash_stay_protected(path: str) -> None:
    async with asgi_client(gateway()) as client:
        resp = await client.get(path)
    assert_problem(resp, 401)


def test_the_public_path_check_takes_off_one_slash_only() -> None:
    prefixes = ("/api/v1/auth", "/.well-known")
    assert is_public("POST", "/api/v1/auth/login/", prefixes)
    assert is_public("GET", "/api/v1/auth/", prefixes)
    assert is_public("GET", "/.well-known/jwks.json/", prefixes)
    assert not is_public("POST", "/api/v1/auth/login//", prefixes)
    assert not is_public("GET", "/api/v1/auth/me/", prefixes)
    assert not is_public("GET", "/api/v1/auth//", prefixes)


@pytest.mark.parametrize("path", ["/live/", "/health/", "/openapi.json/"])
async def test_the_gateway_own_routes_answer_with_a_trailing_slash_without_a_redirect(path: str) -> None:
    async with asgi_client(gateway(), raise_app_exceptions=False) as client:
        resp = await client.get(path)
    assert resp.status_code in (200, 503), resp.text  # /health is 503 with every service down
    assert "location" not in resp.headers


# -- what a service answers, as the browser gets it ------------------------------------------------


@pytest.fixture(scope="module")
def sink(tmp_path_factory) -> Iterator[Sink]:
    sink = Sink(Path(tmp_path_factory.mktemp("browser")))
    sink.wait()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.mark.e2e
@pytest.mark.parametrize("path", ["/api/v1/documents/moved", "/api/v1/documents/moved/"])
async def test_a_service_location_is_made_relative(sink: Sink, path: str) -> None:
    async with asgi_client(gateway(documents_url=sink.url, edge_auth=False)) as client:
        resp = await client.get(path, headers={"Origin": APP})
    assert resp.status_code == 307
    assert resp.headers["location"] == "/api/v1/documents/blob?n=1"
    assert resp.headers["content-location"] == "/api/v1/documents/moved"
    assert resp.headers["link"] == '</api/v1/documents/blob>; rel="next", <https://example.com/terms>; rel="terms"'
    host = sink.url.removeprefix("http://")
    assert not [name for name, value in resp.headers.items() if host in value]
    # only the gateway speaks CORS: the service's own "*" is replaced by the allowed origin
    assert resp.headers.get_list("access-control-allow-origin") == [APP]


@pytest.mark.e2e
async def test_a_proxied_answer_keeps_the_gateway_cors_and_its_own_headers(sink: Sink) -> None:
    async with asgi_client(gateway(documents_url=sink.url, edge_auth=False)) as client:
        resp = await client.get("/api/v1/documents/blob?n=10", headers={"Origin": APP})
    assert resp.status_code == 200 and resp.content == b"\xab" * 10
    assert_cors(resp)


# -- Cross-Origin-Resource-Policy ------------------------------------------------------------------


@pytest.mark.parametrize(("path", "status"), [("/live", 200), ("/api/v1/auth/me", 401), ("/api/v1/auth/login", 503)])
async def test_answers_may_be_loaded_by_another_site(path: str, status: int) -> None:
    """A download of a document in an <img> or <a download> of an app on another site is not
    blocked: cross-origin, not same-site (shared.middleware says why that is safe)."""
    async with asgi_client(gateway()) as client:
        resp = await client.request(
            "POST" if path.endswith("login") else "GET", path, json={} if path.endswith("login") else None
        )
    assert resp.status_code == status
    assert resp.headers["cross-origin-resource-policy"] == "cross-origin"
    assert resp.headers["x-content-type-options"] == "nosniff"


@pytest.mark.e2e
async def test_a_proxied_download_may_be_loaded_by_another_site(sink: Sink) -> None:
    async with asgi_client(gateway(documents_url=sink.url, edge_auth=False)) as client:
        resp = await client.get("/api/v1/documents/blob?n=3")
    assert resp.headers.get_list("cross-origin-resource-policy") == ["cross-origin"]
