"""The web app's image (web/Dockerfile, web/nginx.conf.template) and its docker-compose.yml service:
built as Render builds the static site, served with the SPA fallback and the same headers as
render.yaml's static site, calling the gateway the gateway itself allows."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tools import deploy_check as dc
from tools.stack import free_port

DOCKERFILE = dc.ROOT / "web" / "Dockerfile"
NGINX = dc.ROOT / "web" / "nginx.conf.template"


def nginx_headers(text: str) -> dict[str, str]:
    """The server-level add_header lines of the nginx template, by name."""
    out = {}
    for name, value in re.findall(r'^\s*add_header\s+([A-Za-z-]+)\s+"([^"]*)"\s+always;', text, re.MULTILINE):
        out[name] = value
    return out


@pytest.fixture(scope="module")
def web_service(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]["web"]


def test_image_builds_like_render_and_serves_with_nginx(blueprint: dict[str, Any]) -> None:
    steps = dc.dockerfile_instructions(DOCKERFILE)
    bases = [args for ins, args in steps if ins == "FROM"]
    assert len(bases) == 2 and bases[0].startswith("node:20") and bases[0].endswith(" AS build"), bases
    assert "nginx-unprivileged" in bases[1], "nginx should not run as root"
    runs = [args for ins, args in steps if ins == "RUN"]
    site = dc.static_site(blueprint)
    # Render's buildCommand is "cd web && npm ci && npm run build": the same two steps, in web/.
    assert site["buildCommand"] == "cd web && npm ci && npm run build"
    assert [r.split(" --")[0] for r in runs] == ["npm ci", "npm run build"], runs
    assert ("WORKDIR", "/src/web") in steps
    copies = [args for ins, args in steps if ins == "COPY"]
    assert "web/nginx.conf.template /etc/nginx/templates/default.conf.template" in copies
    assert "--from=build /src/web/dist /usr/share/nginx/html" in copies


def test_nginx_falls_back_to_the_app_and_sends_render_headers(blueprint: dict[str, Any]) -> None:
    text = NGINX.read_text(encoding="utf-8")
    assert re.search(r"location / \{[^}]*try_files \$uri /index\.html;", text), "no SPA fallback"
    assert "listen ${PORT};" in text
    site = dc.static_site(blueprint)
    render = dc.site_headers(site)
    ours = nginx_headers(text)
    assert set(ours) == set(render), (sorted(ours), sorted(render))
    gateway = next(v["value"] for v in site["envVars"] if v["key"] == "VITE_API_URL")
    for name, value in render.items():
        expected = value.replace(gateway, "${API_URL}") if name == "Content-Security-Policy" else value
        assert ours[name] == expected, name
    # add_header inside a location would drop the server's headers there.
    assert not re.search(r"location[^{]*\{[^}]*add_header", text)


def test_compose_builds_the_app_for_the_gateway_it_allows(compose: dict[str, Any], web_service: dict) -> None:
    assert web_service["build"]["context"] == "." and web_service["build"]["dockerfile"] == "web/Dockerfile"
    api = dc.interpolate(web_service["build"]["args"]["VITE_API_URL"])
    # The CSP's connect-src names the same gateway as the build.
    assert dc.compose_env(web_service)["API_URL"] == api
    gateway = compose["services"]["gateway"]
    gateway_port = next(str(p).split(":")[-1] for p in gateway["ports"])
    assert urlsplit(api).port == int(gateway_port)
    # The page's origin (host side of the published port) is one the gateway and auth allow.
    host_port = str(web_service["ports"][0]).split(":")
    assert host_port[0] == "127.0.0.1"
    origin = f"http://localhost:{host_port[1]}"
    assert urlsplit(api).hostname == "localhost", "page and API on one site, or the session cookie is refused"
    for name in ("gateway", "auth"):
        origins = dc.compose_env(compose["services"][name])["CORS_ORIGINS"].split(",")
        assert origin in origins, f"{name} does not allow {origin}"
    test = web_service["healthcheck"]["test"]
    assert test[0] == "CMD" and "http://127.0.0.1:8080/" in test


def test_dockerignore_keeps_web_build_state_out() -> None:
    ignored = {line.strip() for line in (dc.ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"}
    assert {"web/node_modules", "web/dist"} <= ignored
    assert not {p for p in ignored if p.strip("/") in ("web", "web/src", "web/package.json")}


NGINX_MAIN = """worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
  include /etc/nginx/mime.types;
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  include {dir}/default.conf;
}}
"""


@pytest.mark.e2e
def test_nginx_serves_the_app_with_the_fallback_and_headers(tmp_path: Path, blueprint: dict[str, Any]) -> None:
    """The template as the image's nginx fills it in, run by this machine's nginx (skipped without
    one): every route is index.html, a missing asset is a 404, and the headers are render.yaml's."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    root = tmp_path / "html"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>app</title>")
    (root / "assets" / "index-abc.js").write_text("export const a = 1;\n" * 100)
    port, api = free_port(), "http://localhost:8000"
    conf = NGINX.read_text(encoding="utf-8").replace("${PORT}", str(port)).replace("${API_URL}", api)
    (tmp_path / "default.conf").write_text(conf.replace("root /usr/share/nginx/html;", f"root {root};"))
    # Started as root, nginx's workers would run as nobody, who cannot read pytest's folders.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    (tmp_path / "nginx.conf").write_text(user + NGINX_MAIN.format(dir=tmp_path))
    args = [nginx, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path), "-g", "daemon off;"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(base + "/", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else proc.returncode
                assert time.monotonic() < deadline, "nginx did not answer"
                time.sleep(0.05)
        site = dc.static_site(blueprint)
        gateway = next(v["value"] for v in site["envVars"] if v["key"] == "VITE_API_URL")
        expected = {k: v.replace(gateway, api) for k, v in dc.site_headers(site).items()}
        for path in ("/", "/documents/abc/analyses/def", "/chat?x=1"):
            resp = httpx.get(base + path)
            assert resp.status_code == 200 and "<title>app</title>" in resp.text, path
            for name, value in expected.items():
                assert resp.headers.get(name) == value, (path, name)
        asset = httpx.get(base + "/assets/index-abc.js", headers={"Accept-Encoding": "gzip"})
        assert asset.status_code == 200 and asset.headers["content-encoding"] == "gzip"
        assert "max-age=31536000" in asset.headers["cache-control"]
        assert asset.headers["content-security-policy"] == expected["Content-Security-Policy"]
        assert httpx.get(base + "/assets/missing.js").status_code == 404
    finally:
        proc.terminate()
        proc.wait(10)
