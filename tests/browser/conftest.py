"""Real-browser tests: Debian's Chromium, driven by Playwright, runs a small page served from another
origin than the gateway, and that page calls the API with the browser's own fetch, EventSource and
WebSocket, so CORS, cookies and streaming are what a frontend really gets.

Chromium is the system's (/usr/bin/chromium, installed by apt in CI); nothing downloads a browser.
Locally a machine without it skips these tests; under CI=true its absence fails the run.

Origins: the page is served at http://localhost:<port> (listed in the gateway's CORS_ORIGINS) and,
for refusals, at http://localhost:<another port> (not listed); the page addresses the gateway as
http://localhost:<gateway port>. Page and gateway are cross-origin but same-site, as a frontend and
its API on one registrable domain are: Chromium refuses cross-site cookies whatever their
attributes, so a cookie session needs the API on the frontend's site.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CI, running_stack, stack_env
from tests.fakes.openai_server import FakeOpenAI
from tests.support.users import bearer, new_access_token
from tests.support.waiting import eventually
from tools.stack import Stack

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing Chromium would reach out for by itself: on a machine without a network its
# background connections are refused and it stalls.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STATIC = Path(__file__).parent / "static"
ARTIFACTS = Path(__file__).parent / "artifacts"
# The longest a page call may take before the test fails (a hung stream, not a slow machine).
CALL_TIMEOUT = 60.0

# The gateway's upload cap (with the overhead a multipart body may add); the documents service's own
# is larger, so the gateway is the one that refuses.
UPLOAD_LIMIT = 4096
UPLOAD_OVERHEAD = 1024
MODELS = ["br-alpha", "br-hang", "br-writer", "br-chat"]
LLM_ENV = {"LLM_NUM_RETRIES": "0", "LLM_TIMEOUT": "30", "LLM_ALLOWED_FAILS": "100", "ENABLE_CACHE": "false"}
DOCUMENTS_ENV = {"MAX_UPLOAD_BYTES": str(1_000_000), "SSE_POLL_SECONDS": "0.05"}


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The system's Chromium; missing, it skips the browser tests (fails them under CI=true)."""
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            problem = "playwright is not installed (requirements-dev.txt)"
    if problem:
        if CI:
            pytest.fail(f"CI=true needs the browser tests to run: {problem}", pytrace=False)
        pytest.skip(f"browser tests need Chromium: {problem}")
    return CHROMIUM


# ---- the page's origins ------------------------------------------------------------------------
class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@dataclass
class Site:
    """The static page on a loopback port of its own: one origin."""

    server: ThreadingHTTPServer

    @property
    def origin(self) -> str:
        return f"http://localhost:{self.server.server_address[1]}"


@pytest.fixture(scope="session")
def sites() -> Iterator[dict[str, Site]]:
    """Two origins serving the same page: "allowed" is in the gateway's CORS_ORIGINS, "refused" is not."""
    handler = functools.partial(_Quiet, directory=str(STATIC))
    servers = {name: ThreadingHTTPServer(("127.0.0.1", 0), handler) for name in ("allowed", "refused")}
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers.values()]
    for thread in threads:
        thread.start()
    yield {name: Site(server) for name, server in servers.items()}
    for server in servers.values():
        server.shutdown()
        server.server_close()


# ---- the stack -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
async def browser_stack(
    chromium: Path, sites: dict[str, Site], pg_databases, redis_url, fake_provider: FakeOpenAI
) -> AsyncIterator[Stack]:
    """The four services, the gateway allowing the "allowed" origin, llm on the fake provider."""

    def models(workdir: Path) -> dict[str, str]:
        return {"LLM_MODELS_FILE": str(fake_provider.models_file(workdir / "models.json", MODELS))}

    env = {
        **await stack_env(pg_databases, redis_url, "browser"),
        **LLM_ENV,
        "CORS_ORIGINS": sites["allowed"].origin,
        "MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
        "UPLOAD_OVERHEAD_BYTES": str(UPLOAD_OVERHEAD),
    }
    async with running_stack(env, per_service_env={"documents": DOCUMENTS_ENV}, files=models) as st:
        # Each service fetches auth's public keys on its first token check; wait for that here, so
        # no test meets the 503 of a service still fetching them.
        token = await new_access_token(st.url("gateway"), "browser")
        async with httpx.AsyncClient(base_url=st.url("gateway"), headers=bearer(token), timeout=30) as client:
            for path in ("/api/v1/documents", "/api/v1/llm/models"):
                await eventually(
                    lambda path=path: client.get(path),
                    lambda resp: resp.status_code != 503,
                    what=f"{path} checks tokens",
                    timeout=30,
                )
        yield st


@pytest.fixture(scope="session")
def gw(browser_stack: Stack) -> str:
    """The gateway as the page addresses it."""
    return f"http://localhost:{browser_stack.ports['gateway']}"


@pytest.fixture
async def token(browser_stack: Stack) -> str:
    """An access token of a new account (made outside the browser, for tests of something else)."""
    return await new_access_token(browser_stack.url("gateway"), "browser")


# ---- the browser ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
async def browser(chromium: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        # launch() gives the browser a fresh user-data-dir of its own, removed when it closes.
        instance = await playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        yield instance
        await instance.close()


def _artifact_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::")[-1])


@pytest.fixture
async def context(browser: Any, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A fresh browser context (its own cookies) for one test; at the end each of its pages is saved
    as a screenshot under tests/browser/artifacts/."""
    ctx = await browser.new_context()
    console: list[str] = []
    ctx.on("console", lambda msg: console.append(f"[{msg.type}] {msg.text}"))
    yield ctx
    ARTIFACTS.mkdir(exist_ok=True)
    name = _artifact_name(request.node.nodeid)
    for i, page in enumerate(ctx.pages):
        suffix = f"-{i + 1}" if len(ctx.pages) > 1 else ""
        try:
            await page.screenshot(path=str(ARTIFACTS / f"{name}{suffix}.png"), full_page=True)
        except Exception as exc:  # a crashed page must not hide the test's own result
            console.append(f"screenshot of page {i + 1} failed: {exc}")
    await ctx.close()
    if console:
        print("browser console:\n" + "\n".join(console))


class Page:
    """A page of the client, open at an origin; ``await page.call(...)`` runs ``client.call(...)``."""

    def __init__(self, page: Any) -> None:
        self.page = page

    async def run(self, name: str, *args: Any, timeout: float = CALL_TIMEOUT) -> Any:
        script = "([name, args]) => window.client[name](...args)"
        try:
            return await asyncio.wait_for(self.page.evaluate(script, [name, list(args)]), timeout)
        except TimeoutError:
            pytest.fail(f"client.{name}{json.dumps(args)[:200]} did not finish within {timeout:g} s")

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        return functools.partial(self.run, name)


@pytest.fixture
def open_page(context: Any, sites: dict[str, Site], gw: str) -> Callable[..., Awaitable[Page]]:
    """Open the client page at one of the origins ("allowed" unless told) in the test's context."""

    async def opener(site: str = "allowed") -> Page:
        page = await context.new_page()
        await page.goto(f"{sites[site].origin}/index.html?gw={gw}")
        await page.wait_for_function("window.client && window.client.ready")
        return Page(page)

    return opener
