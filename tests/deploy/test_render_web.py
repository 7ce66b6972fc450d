"""render.yaml's static site for the web app: it builds from the repository, serves every SPA path as
index.html, sends a strict Content-Security-Policy, and its URL, the gateway's URL it calls and the
origins the gateway and auth allow all agree."""

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from jsonschema import Draft202012Validator

from tests.deploy.conftest import load_schema
from tools import deploy_check as dc


def env_value(entry: dict[str, Any], key: str) -> str | None:
    for var in entry.get("envVars") or []:
        if var["key"] == key:
            return var.get("value")
    return None


def onrender_url(entry: dict[str, Any]) -> str:
    return f"https://{entry['name']}.onrender.com"


@pytest.fixture(scope="module")
def site(blueprint: dict[str, Any]) -> dict[str, Any]:
    return dc.static_site(blueprint)


@pytest.fixture(scope="module")
def gateway(web: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return web["gateway"]


def test_the_web_app_is_one_static_site(blueprint: dict[str, Any], site: dict[str, Any]) -> None:
    statics = [s for s in blueprint["services"] if s.get("runtime") == "static"]
    assert statics == [site]
    assert site["type"] == "web"
    assert site.get("autoDeployTrigger") == "checksPass"
    assert "web/**" in site["buildFilter"]["paths"]


def test_build_command_and_publish_path_exist_in_the_repository(site: dict[str, Any]) -> None:
    assert site["buildCommand"] == "cd web && npm ci && npm run build"
    package = json.loads((dc.ROOT / "web" / "package.json").read_text(encoding="utf-8"))
    assert "build" in package["scripts"], "web/package.json has no build script"
    # npm ci needs the lock file, and refuses one out of step with package.json.
    lock = json.loads((dc.ROOT / "web" / "package-lock.json").read_text(encoding="utf-8"))
    root = lock["packages"][""]
    for field in ("dependencies", "devDependencies"):
        assert root.get(field, {}) == package.get(field, {}), f"package-lock.json's {field} differ"
    assert site["staticPublishPath"] == "web/dist"
    # Vite's output folder: the default (dist) unless the config says otherwise.
    config = next((dc.ROOT / "web").glob("vite.config.*")).read_text(encoding="utf-8")
    assert "outDir" not in config or "outDir: 'dist'" in config or 'outDir: "dist"' in config
    assert (dc.ROOT / "web" / "index.html").exists()


def test_every_path_is_rewritten_to_the_app(site: dict[str, Any]) -> None:
    assert {"type": "rewrite", "source": "/*", "destination": "/index.html"} in site["routes"]
    assert not [r for r in site["routes"] if r["type"] == "redirect" and r["source"] == "/*"]


def test_content_security_policy_is_strict(site: dict[str, Any], gateway: dict[str, Any]) -> None:
    headers = dc.site_headers(site)
    policy = dc.parse_csp(headers["Content-Security-Policy"])
    text = headers["Content-Security-Policy"]
    for weak in ("'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "'wasm-unsafe-eval'", "*", "http:", "https:"):
        assert weak not in text.split(), f"the policy allows {weak}"
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["img-src"] == ["'self'", "data:", "blob:"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]
    assert policy["form-action"] == ["'self'"]
    # API calls: this origin and the gateway the app is built to call, nothing else.
    api = env_value(site, "VITE_API_URL")
    assert api, "VITE_API_URL is not set for the build"
    assert policy["connect-src"] == ["'self'", origin(api)]


def test_other_security_headers(site: dict[str, Any]) -> None:
    headers = dc.site_headers(site)
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] in ("no-referrer", "strict-origin", "strict-origin-when-cross-origin")


def test_the_app_calls_the_gateway_and_the_gateway_allows_the_app(
    site: dict[str, Any], gateway: dict[str, Any], web: dict[str, dict[str, Any]]
) -> None:
    api = env_value(site, "VITE_API_URL")
    assert api == onrender_url(gateway), "VITE_API_URL is not the gateway's public URL"
    assert urlsplit(api).path in ("", "/")
    for name in ("gateway", "auth"):
        origins = (env_value(web[name], "CORS_ORIGINS") or "").split(",")
        assert onrender_url(site) in [o.strip() for o in origins], f"{name}'s CORS_ORIGINS leaves the web app out"


def test_schema_check_catches_a_broken_static_site(blueprint: dict[str, Any]) -> None:
    validator = Draft202012Validator(load_schema(dc.RENDER_SCHEMA))
    for breakage in ("route without destination", "header without value", "start command"):
        broken = copy.deepcopy(blueprint)
        entry = dc.static_site(broken)
        if breakage == "route without destination":
            del entry["routes"][0]["destination"]
        elif breakage == "header without value":
            del entry["headers"][0]["value"]
        else:
            entry["startCommand"] = "npm start"
        assert not validator.is_valid(broken), breakage


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def test_csp_parser() -> None:
    assert dc.parse_csp("default-src 'self'; connect-src 'self' https://a.example ;") == {
        "default-src": ["'self'"],
        "connect-src": ["'self'", "https://a.example"],
    }


def site_of(host: str) -> str:
    """The registrable domain (the "site" of SameSite) of a host; onrender.com is a public suffix."""
    labels = host.split(".")
    return ".".join(labels[-3:] if host.endswith(".onrender.com") else labels[-2:])


def test_the_refresh_cookie_reaches_the_api_from_the_app(site: dict[str, Any], web: dict[str, dict[str, Any]]) -> None:
    """Two onrender.com subdomains are two sites: a cookie set by the API reaches it from the app's
    pages only when it is SameSite=None."""
    app_host = urlsplit(onrender_url(site)).hostname or ""
    api_host = urlsplit(env_value(site, "VITE_API_URL") or "").hostname or ""
    assert site_of("ultrai-web.onrender.com") != site_of("ultrai-gateway.onrender.com")
    assert site_of("app.example.com") == site_of("api.example.com")
    if site_of(app_host) != site_of(api_host):
        assert env_value(web["auth"], "REFRESH_COOKIE_SAMESITE") == "none"
