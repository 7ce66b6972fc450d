"""The built web app (web/) as the browser tests and bench/bench_web.py serve it: ``npm run build`` with
VITE_API_URL pointing at a test gateway, served by a small static server that does what Render's
static site does (every path without a file is index.html, render.yaml's headers on every answer,
its Content-Security-Policy naming the test gateway), plus what the page-level checks need: axe-core
served from the app's own origin (the policy allows scripts from 'self' only) and a script that
records Content-Security-Policy violations, alert dialogs and page errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tools import deploy_check as dc

WEB = dc.ROOT / "web"
AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
# Where the test page fetches axe from: a path of the app's own origin, so the CSP lets it run.
AXE_PATH = "/__tests__/axe.min.js"
# axe's impact levels that fail a page.
BLOCKING_IMPACTS = ("serious", "critical")

# Recorded in every page of a test's context before the app's own script runs.
WATCH_SCRIPT = """
(() => {
  const seen = (window.__ultraiSeen = { csp: [], errors: [] });
  document.addEventListener("securitypolicyviolation", (e) =>
    seen.csp.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} (${e.sourceFile}:${e.lineNumber})`));
  window.addEventListener("error", (e) => seen.errors.push(String(e.message)));
  window.addEventListener("unhandledrejection", (e) => seen.errors.push("unhandled rejection: " + String(e.reason)));
})();
"""


def missing_tools() -> str | None:
    """What the web app's browser tests lack (None when nothing): npm, web/'s or axe's node_modules."""
    if not (WEB / "package.json").exists():
        return "web/package.json is missing"
    if not shutil.which("npm"):
        return "npm (Node.js 20+) is not installed"
    if not (WEB / "node_modules" / ".bin" / "vite").exists():
        return "web/node_modules is missing (make install runs npm ci)"
    if not AXE.exists():
        return "tests/browser/node_modules/axe-core is missing (make install runs npm ci)"
    return None


def build(out_dir: Path, api_url: str, log_path: Path) -> Path:
    """``npm run build`` of web/ with VITE_API_URL set, into ``out_dir`` (web/dist is left alone)."""
    env = {**os.environ, "VITE_API_URL": api_url, "CI": "true"}
    with open(log_path, "wb") as log:
        proc = subprocess.run(
            ["npm", "run", "build", "--", "--outDir", str(out_dir), "--emptyOutDir"],
            cwd=WEB,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    if proc.returncode != 0 or not (out_dir / "index.html").exists():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"npm run build exited {proc.returncode}:\n{tail}")
    return out_dir


def static_headers(api_url: str) -> dict[str, str]:
    """render.yaml's static-site headers, its gateway replaced by ``api_url`` in the policy."""
    site = dc.static_site(dc.load_yaml(dc.BLUEPRINT))
    gateway = next(v["value"] for v in site["envVars"] if v["key"] == "VITE_API_URL")
    parts = urlsplit(api_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    return {name: value.replace(gateway, origin) for name, value in dc.site_headers(site).items()}


class _AppHandler(SimpleHTTPRequestHandler):
    """A file when one exists, index.html otherwise (Render's rewrite of /* to /index.html)."""

    site: AppSite

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def translate_path(self, path: str) -> str:
        clean = urlsplit(path).path
        if clean == AXE_PATH:
            return str(AXE)
        root = self.site.root
        if root is None:
            return str(Path("/nonexistent"))
        found = Path(super().translate_path(path))
        if found.is_file():
            return str(found)
        return str(root / "index.html")

    def end_headers(self) -> None:
        for name, value in self.site.headers.items():
            self.send_header(name, value)
        if urlsplit(self.path).path.startswith("/assets/"):
            self.send_header("Cache-Control", "public, max-age=31536000, immutable")
        else:
            self.send_header("Cache-Control", "no-cache")
        super().end_headers()


@dataclass
class AppSite:
    """The static server on a loopback port; ``root`` (the built app) may be set after it starts, so
    its origin can go into the gateway's CORS_ORIGINS before the app is built for that gateway."""

    root: Path | None = None
    headers: dict[str, str] = field(default_factory=dict)
    server: ThreadingHTTPServer | None = None

    @property
    def origin(self) -> str:
        assert self.server is not None
        return f"http://localhost:{self.server.server_address[1]}"

    def start(self) -> AppSite:
        handler = type("Handler", (_AppHandler,), {"site": self})

        def make(*args: Any, **kwargs: Any) -> Any:
            # The folder is read per request: the app is built after the server starts.
            return handler(*args, directory=str(self.root or "/nonexistent"), **kwargs)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), make)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


async def watch(context: Any) -> None:
    """Record CSP violations and errors in every page of ``context``; refuse every dialog (counted)."""
    await context.add_init_script(script=WATCH_SCRIPT)


async def seen(page: Any) -> dict[str, list[str]]:
    return await page.evaluate("() => window.__ultraiSeen || {csp: [], errors: []}")


async def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical findings on the page as it is now."""
    if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
        await page.add_script_tag(url=AXE_PATH)
    found = await page.evaluate(
        """async () => {
            const r = await axe.run(document, { resultTypes: ["violations"] });
            return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
              nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" ") + " " + (n.failureSummary || "")) }));
        }"""
    )
    return [v for v in found if v["impact"] in BLOCKING_IMPACTS]


def describe_violations(where: str, violations: list[dict[str, Any]]) -> str:
    lines = [f"{where}: {len(violations)} serious or critical accessibility findings"]
    for v in violations:
        lines.append(f"  [{v['impact']}] {v['id']}: {v['help']}")
        lines.extend(f"      {node}" for node in v["nodes"])
    return "\n".join(lines)


ACTIVE = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const label = (el.labels && el.labels[0] && el.labels[0].textContent) || el.getAttribute("aria-label") || "";
  return { tag: el.tagName.toLowerCase(), type: el.getAttribute("type") || "", role: el.getAttribute("role") || "",
           label: label.trim(), text: (el.textContent || "").trim().slice(0, 200), value: el.value ?? null,
           checked: typeof el.checked === "boolean" ? el.checked : null };
}"""


async def focused(page: Any) -> dict[str, Any] | None:
    return await page.evaluate(ACTIVE)


async def tab_to(
    page: Any, wanted: Callable[[dict[str, Any]], bool], what: str, *, limit: int = 80, back: bool = False
) -> dict[str, Any]:
    """Press Tab (Shift+Tab with ``back``) until the focused element is ``wanted``; fails naming the
    stops it passed."""
    stops = []
    for _ in range(limit):
        await page.keyboard.press("Shift+Tab" if back else "Tab")
        now = await focused(page)
        if now is not None and wanted(now):
            return now
        stops.append(now and (now["label"] or now["text"][:40] or now["tag"]))
    raise AssertionError(f"Tab never reached {what}; it passed: {stops}")


def labelled(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda el: el["label"] == name


def named(text: str, tag: str | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda el: (el["label"] == text or el["text"] == text) and (tag is None or el["tag"] == tag)


Check = Callable[[Any], Awaitable[None]]
