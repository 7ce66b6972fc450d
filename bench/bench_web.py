"""The web app: what its first page costs a browser, how soon ``make dev`` serves it, and how soon an
analysis shows its first event once a document is uploaded.

1. Bundle: ``npm run build`` of web/ into a scratch folder; the initial JS (the entry script and
   everything it imports statically) and the whole first page (index.html, scripts, styles, icon),
   each file gzip-compressed as a server sends it (tools/web_bundle.py).
2. ``make dev``: from starting it until Vite's dev server answers the app's page on
   http://127.0.0.1:5173 (and until the gateway on 8000 is ready). Needs those ports free; the
   services keep their data in a scratch DATA_DIR.
3. Upload to first event: the four services on loopback with the fake provider, the built app
   served as Render serves it, Chromium signs in and uploads a PDF; from the upload's answer
   reaching the page to the first analysis event the page shows (the stage "Reading the
   document" or later), and to the first model's answer on screen. The analysis is started by
   Playwright at once (no human pause), with two models.

Usage: python bench/bench_web.py [bundle|dev|analysis ...]   (default: all three, each once)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
# tests.documents.conftest (its PDF maker) imports the documents service.
sys.path[:0] = [str(ROOT), str(ROOT / "services" / "documents")]

from tests.browser import webapp  # noqa: E402
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, DOCUMENTS_ENV, LLM_ENV  # noqa: E402
from tests.documents.conftest import make_pdf  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI  # noqa: E402
from tests.support.users import PASSWORD, new_email, register  # noqa: E402
from tools.bench_results import Results  # noqa: E402
from tools.stack import Stack  # noqa: E402
from tools.web_bundle import measure  # noqa: E402

MODELS = ["bench-alpha", "bench-beta"]


def bundle(results: Results) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-web-"))
    try:
        t0 = time.perf_counter()
        dist = webapp.build(work / "dist", "https://api.example.com", work / "build.log")
        took = time.perf_counter() - t0
        b = measure(dist)
        print(f"build (tsc + vite build): {took:.1f} s")
        print(
            f"initial JS: {b.initial_js_bytes / 1024:.1f} kB, {b.initial_js_gzip / 1024:.1f} kB gzip "
            f"({len(b.initial_js)} file(s))"
        )
        print(f"first page total transfer: {b.first_page_gzip / 1024:.1f} kB gzip in {len(b.first_page)} files")
        for a in b.first_page:
            print(f"  {a.path:<40} {a.size / 1024:8.1f} kB {a.gzip / 1024:8.1f} kB gzip")
        print(f"dist: {b.dist_bytes / 1024:.1f} kB in {b.dist_files} files")
        # The files' own rows are left out: their names carry a content hash, new at each change.
        results.add("build (tsc + vite build)", took, "s", better="lower")
        results.add("initial JS", b.initial_js_bytes / 1024, "kB", better="lower")
        results.add("initial JS gzip", b.initial_js_gzip / 1024, "kB", better="lower")
        results.add("first page total transfer gzip", b.first_page_gzip / 1024, "kB", better="lower")
        results.add("dist", b.dist_bytes / 1024, "kB", better="lower")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def dev(results: Results) -> None:
    for port in (5173, 8000, 8001, 8002, 8003):
        if _answers(f"http://127.0.0.1:{port}/"):
            print(f"make dev: port {port} is taken; not measured")
            return
    data = Path(tempfile.mkdtemp(prefix="bench-dev-"))
    env = {**os.environ, "DATA_DIR": str(data)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "dev"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    app = gateway = None
    try:
        deadline = t0 + 180
        while time.perf_counter() < deadline and (app is None or gateway is None):
            if proc.poll() is not None:
                print(f"make dev exited with status {proc.returncode}")
                return
            now = time.perf_counter() - t0
            if app is None and _answers("http://127.0.0.1:5173/"):
                app = now
            if gateway is None and _answers("http://127.0.0.1:8000/ready"):
                gateway = now
            time.sleep(0.05)
        print(f"make dev to the app answering (Vite, http://127.0.0.1:5173): {app:.2f} s" if app else "app: no answer")
        print(f"make dev to the gateway ready (http://127.0.0.1:8000/ready): {gateway:.2f} s" if gateway else "")
        results.add("make dev to the app answering", app, "s", better="lower")
        results.add("make dev to the gateway ready", gateway, "s", better="lower")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(data, ignore_errors=True)


FIRST_EVENT = """([models]) => {
  const stage = [...document.querySelectorAll("[role=status]")].some((s) =>
    /Reading the document|Asking the models|Synthesis|Completed/.test(s.textContent));
  const answer = models.some((m) => {
    const r = [...document.querySelectorAll("section[aria-label]")].find((s) => s.getAttribute("aria-label") === m);
    return r && /considered with care/.test(r.textContent);
  });
  return { stage, answer };
}"""


async def analysis(results: Results) -> None:
    from playwright.async_api import async_playwright

    workdir = Path(tempfile.mkdtemp(prefix="bench-web-"))
    site = webapp.AppSite().start()
    with FakeOpenAI() as fake:
        env = {
            **LLM_ENV,
            "CORS_ORIGINS": site.origin,
            "RATE_LIMIT_PER_MINUTE": "100000",
            "LLM_MODELS_FILE": str(fake.models_file(workdir / "models.json", MODELS)),
        }
        stack = Stack(workdir / "stack", env)
        stack.per_service_env["documents"] = DOCUMENTS_ENV
        try:
            await asyncio.to_thread(stack.start_all)
            api = f"http://localhost:{stack.ports['gateway']}"
            site.root = webapp.build(workdir / "dist", api, workdir / "build.log")
            site.headers = webapp.static_headers(api)
            async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=30) as client:
                email = await register(client, new_email("bench"))
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
                page = await browser.new_page()
                page.set_default_timeout(60_000)
                uploaded: list[float] = []

                def on_response(resp: Any) -> None:
                    if resp.request.method == "POST" and resp.url.endswith("/api/v1/documents"):
                        uploaded.append(time.perf_counter())

                page.on("response", on_response)
                await page.goto(site.origin + "/signin")
                await page.get_by_label("Email").fill(email)
                await page.get_by_label("Password").fill(PASSWORD)
                await page.get_by_role("button", name="Sign in").click()
                await page.get_by_role("button", name="Sign out").wait_for()
                await page.get_by_label("Upload a document").set_input_files(
                    files=[{"name": "bench.pdf", "mimeType": "application/pdf", "buffer": make_pdf(["Bench page."])}]
                )
                await page.get_by_role("link", name="bench.pdf", exact=True).first.click()
                boxes = page.get_by_role("group", name="Models").get_by_role("checkbox")
                await page.get_by_role("checkbox", name=MODELS[0], exact=True).wait_for()
                for i in range(await boxes.count()):
                    await boxes.nth(i).set_checked(True)
                await page.get_by_label("Pattern").select_option(value="parallel")
                clicked = time.perf_counter()
                await page.get_by_role("button", name="Start analysis").click()
                await page.wait_for_function(f"() => ({FIRST_EVENT})([{MODELS!r}]).stage", polling="raf")
                stage = time.perf_counter()
                await page.wait_for_function(f"() => ({FIRST_EVENT})([{MODELS!r}]).answer", polling="raf")
                answer = time.perf_counter()
                await browser.close()
            start = uploaded[0]
            print(f"upload answered to Start analysis clicked (page, form, models list): {clicked - start:.2f} s")
            print(f"upload answered to the first analysis event shown: {stage - start:.2f} s")
            print(f"upload answered to the first model answer shown: {answer - start:.2f} s")
            print(f"Start analysis clicked to the first event shown: {stage - clicked:.2f} s")
            results.add("upload answered to Start analysis clicked", clicked - start, "s", better="lower")
            results.add("upload answered to the first analysis event shown", stage - start, "s", better="lower")
            results.add("upload answered to the first model answer shown", answer - start, "s", better="lower")
            results.add("Start analysis clicked to the first event shown", stage - clicked, "s", better="lower")
        finally:
            stack.stop_all()
            site.stop()
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parts = sys.argv[1:] or ["bundle", "dev", "analysis"]
    problem = webapp.missing_tools()
    if problem:
        print(f"bench_web needs {problem}")
        sys.exit(1)
    results = Results("web")
    for part in parts:
        print(f"-- {part}")
        if part == "bundle":
            bundle(results)
        elif part == "dev":
            dev(results)
        elif part == "analysis":
            if not CHROMIUM.exists():
                print(f"{CHROMIUM} is missing: not measured")
                continue
            asyncio.run(analysis(results))
        else:
            sys.exit(f"unknown part {part!r}: bundle, dev or analysis")
    results.save()


if __name__ == "__main__":
    main()
