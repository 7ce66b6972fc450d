"""The web app (web/), built for production and served as Render serves it (SPA rewrite, render.yaml's
headers and strict Content-Security-Policy), driven in Chromium against the real four services and
the fake provider: sign-up, upload, analyses and their progress, a failing model, the synthesis,
export, chat with stop, usage, sign-out, a password change and an account deletion from the account
page, a session that outlives its access token in two tabs, an answer that is an XSS attempt,
keyboard-only use, and an axe-core scan of every page.

Pages are found by the accessible names the app promises (labels, roles, region names). Every test
also checks that the page met no Content-Security-Policy violation, no script error and no dialog,
and leaves a screenshot of its last screen in tests/browser/artifacts/.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import webapp
from tests.browser.conftest import DOCUMENTS_ENV, LLM_ENV
from tests.conftest import CI, running_stack, stack_env
from tests.documents.conftest import make_pdf
from tests.fakes.openai_server import FakeOpenAI
from tests.support.users import PASSWORD, bearer, login, new_email, register
from tests.support.waiting import eventually
from tools.stack import Stack

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

ALPHA, BETA, WRITER, FAILING, CHAT = "web-alpha", "web-beta", "web-writer", "web-failing", "web-chat"
MODELS = [ALPHA, BETA, WRITER, FAILING, CHAT]
# Short-lived access tokens (the shortest auth allows) and no leeway: a test can outlive one.
ACCESS_TTL = 60
# Each account's daily token allowance: far above what a flow spends, spent at once by the 429 test.
TOKENS_PER_DAY = 1_000_000
XSS = "<img src=x onerror=alert(1)>"
NEW_PASSWORD = "a brand new passphrase, typed twice"
INVALID_LOGIN = "Invalid email or password."
# How long the app may take to show what the stack did (a hung page, not a slow machine).
UI_TIMEOUT = 60_000


# ---- the app, built and served -----------------------------------------------------------------
@dataclass
class App:
    origin: str  # where the browser opens the app
    api: str  # the gateway as the app calls it
    stack: Stack

    async def account(self) -> str:
        """A new account made through the API (for tests of something other than sign-up)."""
        async with httpx.AsyncClient(base_url=self.stack.url("gateway"), timeout=30) as client:
            return await register(client, new_email("webapp"))

    async def upload(self, email: str, name: str, data: bytes, mime: str = "application/pdf") -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.stack.url("gateway"), timeout=60) as client:
            tokens = await login(client, email)
            resp = await client.post(
                "/api/v1/documents", files={"file": (name, data, mime)}, headers=bearer(tokens["access_token"])
            )
            assert resp.status_code == 201, resp.text
            return resp.json()


@pytest.fixture(scope="session")
def web_ready(chromium: Path) -> None:
    """npm, web/node_modules and axe-core: missing, the tests skip (fail under CI=true)."""
    problem = webapp.missing_tools()
    if problem:
        if CI:
            pytest.fail(f"CI=true needs the web app's browser tests to run: {problem}", pytrace=False)
        pytest.skip(f"the web app's browser tests need {problem}")


@pytest.fixture(scope="session")
def app_site(web_ready: None) -> Iterator[webapp.AppSite]:
    site = webapp.AppSite().start()
    yield site
    site.stop()


@pytest.fixture(scope="session")
async def app_stack(
    app_site: webapp.AppSite, pg_databases, redis_url, fake_provider: FakeOpenAI
) -> AsyncIterator[Stack]:
    """The four services for the app: the gateway and auth allow the app's origin, llm answers from
    the fake provider, access tokens last a minute."""

    def models(workdir: Path) -> dict[str, str]:
        return {"LLM_MODELS_FILE": str(fake_provider.models_file(workdir / "models.json", MODELS))}

    env = {
        **await stack_env(pg_databases, redis_url, "webapp"),
        **LLM_ENV,
        "CORS_ORIGINS": app_site.origin,
        "ACCESS_TOKEN_TTL_SECONDS": str(ACCESS_TTL),
        "JWT_LEEWAY_SECONDS": "0",
        "LLM_BUDGET_TOKENS_PER_DAY": str(TOKENS_PER_DAY),
    }
    async with running_stack(env, per_service_env={"documents": DOCUMENTS_ENV}, files=models) as st:
        # Each service fetches auth's keys on its first token check: wait for that here.
        async with httpx.AsyncClient(base_url=st.url("gateway"), timeout=30) as client:
            email = await register(client, new_email("webapp"))
            token = (await login(client, email))["access_token"]
            for path in ("/api/v1/documents", "/api/v1/llm/models"):
                await eventually(
                    lambda path=path: client.get(path, headers=bearer(token)),
                    lambda resp: resp.status_code != 503,
                    what=f"{path} checks tokens",
                    timeout=30,
                )
        yield st


@pytest.fixture(scope="session")
def app(app_site: webapp.AppSite, app_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> App:
    """The app built once for the session with VITE_API_URL naming the test gateway, then served."""
    api = f"http://localhost:{app_stack.ports['gateway']}"
    out = tmp_path_factory.mktemp("web")
    app_site.root = webapp.build(out / "dist", api, out / "build.log")
    app_site.headers = webapp.static_headers(api)
    return App(app_site.origin, api, app_stack)


# ---- a test's browser ----------------------------------------------------------------------------
@dataclass
class Browser:
    """The test's browser context (conftest's: screenshots at the end) with the app's checks."""

    app: App
    context: Any
    dialogs: list[str] = field(default_factory=list)
    pages: list[Any] = field(default_factory=list)
    # Across navigations too (the page's own record starts again with each document).
    problems: list[str] = field(default_factory=list)

    async def open(self, path: str = "/") -> Any:
        page = await self.context.new_page()
        page.set_default_timeout(UI_TIMEOUT)
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda exc: self.problems.append(f"script error: {exc}"))
        page.on("console", self._console)
        self.pages.append(page)
        await page.goto(self.app.origin + path)
        return page

    def _console(self, msg: Any) -> None:
        if msg.type == "error" and "Content Security Policy" in msg.text:
            self.problems.append(f"CSP: {msg.text}")

    async def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    async def sign_in(self, email: str, path: str = "/signin") -> Any:
        page = await self.open(path)
        await page.get_by_label("Email").fill(email)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        return page

    async def accessible(self, page: Any, where: str) -> None:
        """axe-core finds nothing serious or critical on the page as it is now."""
        violations = await webapp.axe_violations(page)
        assert not violations, webapp.describe_violations(where, violations)

    async def clean(self) -> None:
        """No dialog opened, and no page met a CSP violation or a script error."""
        assert not self.dialogs, f"dialogs opened: {self.dialogs}"
        assert not self.problems, "\n".join(self.problems)
        for page in self.pages:
            if page.is_closed():
                continue
            seen = await webapp.seen(page)
            assert not seen["csp"], f"Content-Security-Policy violations on {page.url}: {seen['csp']}"
            assert not seen["errors"], f"script errors on {page.url}: {seen['errors']}"


@pytest.fixture
async def ui(app: App, context: Any) -> Browser:
    await webapp.watch(context)
    return Browser(app, context)


def expect(target: Any) -> Any:
    from playwright.async_api import expect as playwright_expect

    playwright_expect.set_options(timeout=UI_TIMEOUT)
    return playwright_expect(target)


def region(page: Any, name: str) -> Any:
    return page.get_by_role("region", name=name, exact=True)


def status(page: Any, text: str) -> Any:
    return page.get_by_role("status").filter(has_text=re.compile(rf"\b{text}\b")).first


async def open_account(page: Any, email: str) -> None:
    """The account page, from the main navigation, showing the account's email."""
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Account", exact=True).click()
    await expect(page.get_by_role("heading", name="Account", level=1)).to_be_visible()
    await expect(page.get_by_role("main").get_by_text(email, exact=True)).to_be_visible()


async def sign_in_refused(page: Any, email: str, password: str) -> None:
    """On the sign-in page: ``password`` does not sign ``email`` in, and the page says why."""
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert").filter(has_text=INVALID_LOGIN)).to_be_visible()
    await expect(page.get_by_role("button", name="Sign out")).to_have_count(0)


async def open_document(page: Any, name: str) -> None:
    await page.get_by_role("link", name=name, exact=True).first.click()
    await expect(page.get_by_role("button", name="Start analysis")).to_be_visible()


async def choose_models(page: Any, *models: str) -> None:
    """Exactly these models ticked (the form ticks the first three available ones by default)."""
    boxes = page.get_by_role("group", name="Models").get_by_role("checkbox")
    await expect(boxes.first).to_be_visible()
    for i in range(await boxes.count()):
        box = boxes.nth(i)
        name = (await box.get_attribute("id")) or ""
        label = await page.locator(f"label[for='{name}']").inner_text() if name else ""
        await box.set_checked(label.strip() in models)
    for model in models:
        await expect(page.get_by_role("checkbox", name=model, exact=True)).to_be_checked()


# Installed before an analysis starts: the order in which answers and the final status appear.
PROGRESS_RECORDER = """([models, marker]) => {
  const log = (window.__progress = []);
  const note = (what) => { if (!log.includes(what)) log.push(what); };
  const check = () => {
    for (const m of models) {
      const r = [...document.querySelectorAll("section[aria-label]")].find((s) => s.getAttribute("aria-label") === m);
      if (r && r.textContent.includes(marker)) note(m);
    }
    for (const s of document.querySelectorAll("[role=status]")) {
      if (/\\bCompleted\\b/.test(s.textContent)) note("Completed");
      if (/\\bFailed\\b/.test(s.textContent)) note("Failed");
    }
  };
  new MutationObserver(check).observe(document.body, { subtree: true, childList: true, characterData: true });
}"""


# Installed before an upload: whether a progress bar named "Upload progress" was ever on the page.
UPLOAD_PROGRESS_RECORDER = """() => {
  window.__uploadProgressSeen = false;
  const check = () => {
    for (const el of document.querySelectorAll("progress, [role=progressbar]")) {
      if (el.getAttribute("aria-label") === "Upload progress") window.__uploadProgressSeen = true;
    }
  };
  new MutationObserver(check).observe(document.body, { subtree: true, childList: true, attributes: true });
}"""


# ---- the flows -----------------------------------------------------------------------------------
async def test_sign_up_sign_out_and_a_wrong_password(ui: Browser) -> None:
    page = await ui.open("/")
    # Signed out, / leads to sign-in.
    await expect(page).to_have_url(re.compile(r"/signin"))
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    await ui.accessible(page, "sign-in page")

    await page.goto(ui.app.origin + "/signup")
    await expect(page.get_by_role("button", name="Create account")).to_be_visible()
    await ui.accessible(page, "sign-up page")
    email = new_email("webapp")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    # A new account is signed in and lands on its documents.
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    await expect(page).to_have_url(re.compile(r"/documents$"))
    nav = page.get_by_role("navigation", name="Main")
    for link in ("Documents", "Chat", "Usage", "API keys", "Account"):
        await expect(nav.get_by_role("link", name=link, exact=True)).to_be_visible()
    await ui.accessible(page, "documents page (empty)")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(r"/signin"))
    # The session is over, not just hidden: a reload of a signed-in page asks to sign in again.
    await page.goto(ui.app.origin + "/documents")
    await expect(page).to_have_url(re.compile(r"/signin"))
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()

    await page.get_by_label("Email").fill(email)
    # An empty password: the API's 422 names the field, and the form ties its message to it.
    await page.get_by_role("button", name="Sign in").click()
    password = page.get_by_label("Password")
    await expect(password).to_have_attribute("aria-invalid", "true")
    await expect(password).to_have_accessible_description(re.compile(r"\S"))
    await expect(page.locator("#email")).not_to_have_attribute("aria-invalid", "true")
    await page.get_by_label("Password").fill(PASSWORD + "-not")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_be_visible()
    await expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    await ui.clean()


async def test_upload_analyse_with_two_models_synthesis_export_usage(ui: Browser, fake_provider: FakeOpenAI) -> None:
    # The second model answers a few seconds after the first: its answer arrives later.
    fake_provider.behave(BETA, delay=3.0)
    email = await ui.app.account()
    page = await ui.sign_in(email)

    pdf = make_pdf(["Quarterly report", "Revenue rose by a tenth; costs held steady."])
    await page.evaluate(UPLOAD_PROGRESS_RECORDER)
    await page.get_by_label("Upload a document").set_input_files(
        files=[{"name": "quarterly.pdf", "mimeType": "application/pdf", "buffer": pdf}]
    )
    await expect(page.get_by_role("link", name="quarterly.pdf", exact=True).first).to_be_visible()
    # The upload showed its progress bar while it ran.
    assert await page.evaluate("() => window.__uploadProgressSeen") is True
    await ui.accessible(page, "documents page")

    await open_document(page, "quarterly.pdf")
    await ui.accessible(page, "document page")
    await page.get_by_role("radio", name="Summary", exact=True).check()
    await choose_models(page, ALPHA, BETA)
    await page.get_by_label("Pattern").select_option(value="synthesis")
    await page.get_by_label("Synthesis model").select_option(value=WRITER)
    await page.evaluate(PROGRESS_RECORDER, [[ALPHA, BETA, "Synthesis"], "considered with care"])
    await page.get_by_role("button", name="Start analysis").click()

    await expect(page).to_have_url(re.compile(r"/documents/[^/]+/analyses/[^/]+$"))
    await expect(status(page, "Completed")).to_be_visible()
    await expect(region(page, ALPHA)).to_contain_text("considered with care")
    await expect(region(page, BETA)).to_contain_text("considered with care")
    await expect(region(page, "Synthesis")).to_contain_text(f"{WRITER} answers")
    # Progress arrived as it happened: the first model's answer was on screen before the second's,
    # and both before the analysis was complete.
    order = await page.evaluate("() => window.__progress")
    assert ALPHA in order and BETA in order and "Completed" in order, order
    assert order.index(ALPHA) < order.index(BETA) < order.index("Completed"), order
    await ui.accessible(page, "analysis page")

    async with page.expect_download() as info:
        await page.get_by_role("button", name="Export Markdown").click()
    download = await info.value
    assert download.suggested_filename.endswith(".md"), download.suggested_filename
    markdown = Path(await download.path()).read_text(encoding="utf-8")
    for text in (ALPHA, BETA, "considered with care", f"{WRITER} answers"):
        assert text in markdown, f"{text!r} is not in the export:\n{markdown[:2000]}"

    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Usage", exact=True).click()
    await expect(page.get_by_role("heading", name="Usage", level=1)).to_be_visible()
    await expect(page.get_by_text("Budget left").first).to_be_visible()
    await ui.accessible(page, "usage page")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    await ui.clean()


async def test_a_failing_model_is_shown_failed_and_the_others_complete(
    ui: Browser, app: App, fake_provider: FakeOpenAI
) -> None:
    fake_provider.behave(FAILING, status=500)
    email = await app.account()
    await app.upload(email, "memo.pdf", make_pdf(["A memo about the spring launch."]))
    page = await ui.sign_in(email)
    await open_document(page, "memo.pdf")
    await page.get_by_role("radio", name="Summary", exact=True).check()
    await choose_models(page, ALPHA, FAILING)
    await page.get_by_label("Pattern").select_option(value="parallel")
    await page.get_by_role("button", name="Start analysis").click()

    await expect(status(page, "Completed")).to_be_visible()
    await expect(region(page, ALPHA)).to_contain_text("considered with care")
    # The contract names no word for a failed model's badge: "Failed" or "Error".
    await expect(region(page, FAILING)).to_contain_text(re.compile(r"Failed|Error"))
    await expect(region(page, FAILING)).not_to_contain_text("considered with care")
    await ui.accessible(page, "analysis page with a failed model")
    await ui.clean()


async def test_an_api_key_is_shown_once_works_and_is_revoked(ui: Browser, app: App) -> None:
    """Made on the keys page, a key is shown once, listed by its prefix only, works for a program,
    and once revoked (after a confirmation) is gone from the list and refused by the API."""
    email = await app.account()
    page = await ui.sign_in(email)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="API keys", exact=True).click()
    await expect(page.get_by_text("No keys yet.")).to_be_visible()
    await page.get_by_label("Name").fill("nightly script")
    await page.get_by_label("Requests per minute").fill("30")
    await page.get_by_role("button", name="Create key").click()
    shown = page.get_by_label("Key for nightly script")
    await expect(shown).to_have_value(re.compile(r"^uai_"))
    key = await shown.input_value()
    row = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="nightly script"))
    await expect(row).to_contain_text("30 req/min")
    await expect(row).to_contain_text(key[:8])
    await expect(row).not_to_contain_text(key)
    async with httpx.AsyncClient(base_url=app.stack.url("gateway"), timeout=30) as client:
        assert (await client.get("/v1/models", headers=bearer(key))).status_code == 200
        await page.get_by_role("button", name="I have saved it").click()
        await expect(page.get_by_label("Key for nightly script")).to_have_count(0)
        # Shown once: a reload lists the key, never its value.
        await page.reload()
        await expect(row).to_be_visible()
        await expect(page.get_by_label("Key for nightly script")).to_have_count(0)

        await page.get_by_role("button", name="Revoke nightly script").click()
        dialog = page.get_by_role("dialog")
        await dialog.get_by_role("button", name="Revoke key").click()
        await expect(row).to_have_count(0)
        await expect(page.get_by_text("No keys yet.")).to_be_visible()
        await eventually(
            lambda: client.get("/v1/models", headers=bearer(key)),
            lambda resp: resp.status_code == 401,
            what="the revoked key refused",
        )
    await ui.clean()


async def test_a_password_change_ends_the_session_and_the_new_password_signs_in(ui: Browser, app: App) -> None:
    email = await app.account()
    page = await ui.sign_in(email)
    await open_account(page, email)
    await ui.accessible(page, "account page")
    form = region(page, "Change password")
    current = form.get_by_label("Current password", exact=True)
    new = form.get_by_label("New password", exact=True)
    await expect(current).to_have_attribute("autocomplete", "current-password")
    await expect(new).to_have_attribute("autocomplete", "new-password")
    change = form.get_by_role("button", name="Change password")

    # A new password the policy refuses: the 422 names the field, and the form ties its message to it.
    await current.fill(PASSWORD)
    await new.fill("short")
    await change.click()
    await expect(new).to_have_attribute("aria-invalid", "true")
    await expect(new).to_have_accessible_description(re.compile(r"at least \d+ characters"))
    await expect(current).not_to_have_attribute("aria-invalid", "true")

    # A wrong current password: auth's 401 is shown, and the person is still signed in, still here.
    await current.fill(PASSWORD + "-not")
    await new.fill(NEW_PASSWORD)
    await change.click()
    await expect(form.get_by_role("alert").filter(has_text="The current password is not correct.")).to_be_visible()
    await expect(page).to_have_url(re.compile(r"/account$"))
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    await ui.accessible(page, "account page with errors")

    await current.fill(PASSWORD)
    await change.click()
    # Every session ended: the app sends the person to sign in again, and says why.
    await expect(page).to_have_url(re.compile(r"/signin\?notice="))
    notice = page.get_by_role("status").filter(has_text="Password changed: sign in with the new one.")
    await expect(notice).to_be_visible()
    await expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    await ui.accessible(page, "sign-in page after a password change")
    # This browser's session is over too (its refresh cookie no longer signs it in).
    await page.goto(ui.app.origin + "/account")
    await expect(page).to_have_url(re.compile(r"/signin\?next="))
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()

    await sign_in_refused(page, email, PASSWORD)
    await page.get_by_label("Password").fill(NEW_PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    await expect(page).to_have_url(re.compile(r"/account$"))
    await ui.clean()


async def test_deleting_the_account_takes_the_password_and_a_confirmation(ui: Browser, app: App) -> None:
    email = await app.account()
    await app.upload(email, "mine.pdf", make_pdf(["Deleted with its account."]))
    page = await ui.sign_in(email)
    await expect(page.get_by_role("link", name="mine.pdf", exact=True).first).to_be_visible()
    await open_account(page, email)
    section = region(page, "Delete account")
    # It says plainly what goes, and that it is for good.
    for what in ("API keys", "documents", "analyses", "usage", "conversations", "cannot be undone"):
        await expect(section).to_contain_text(what)
    password = section.get_by_label("Password", exact=True)
    await expect(password).to_have_attribute("autocomplete", "current-password")
    delete = section.get_by_role("button", name="Delete account")
    dialog = page.get_by_role("dialog")

    # A wrong password: confirmed, sent, refused; nothing is deleted.
    await password.fill(PASSWORD + "-not")
    await delete.click()
    await expect(dialog).to_be_visible()
    await ui.accessible(page, "account deletion confirmation")
    await dialog.get_by_role("button", name="Delete my account").click()
    await expect(dialog).to_have_count(0)
    await expect(section.get_by_role("alert").filter(has_text="The password is not correct.")).to_be_visible()
    await expect(page).to_have_url(re.compile(r"/account$"))
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    async with httpx.AsyncClient(base_url=app.stack.url("gateway"), timeout=30) as client:
        tokens = await login(client, email)
        resp = await client.get("/api/v1/documents", headers=bearer(tokens["access_token"]))
        assert resp.status_code == 200, resp.text
        assert [d["name"] for d in resp.json()["items"]] == ["mine.pdf"]

    # The right password, but the confirmation cancelled: nothing is sent.
    await password.fill(PASSWORD)
    await delete.click()
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_have_count(0)
    await expect(page).to_have_url(re.compile(r"/account$"))

    await delete.click()
    await dialog.get_by_role("button", name="Delete my account").click()
    await expect(page).to_have_url(re.compile(r"/signin\?notice="))
    await expect(page.get_by_role("status").filter(has_text="Your account was deleted")).to_be_visible()
    await expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    await ui.accessible(page, "sign-in page after an account deletion")
    await sign_in_refused(page, email, PASSWORD)
    await ui.clean()


async def test_delete_asks_for_confirmation(ui: Browser, app: App) -> None:
    email = await app.account()
    await app.upload(email, "keep.pdf", make_pdf(["Keep me."]))
    await app.upload(email, "drop.pdf", make_pdf(["Drop me."]))
    page = await ui.sign_in(email)
    item = page.get_by_role("listitem").filter(has=page.get_by_role("link", name="drop.pdf", exact=True))
    await item.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    await ui.accessible(page, "delete confirmation")
    await dialog.get_by_role("button", name="Delete document").click()
    await expect(page.get_by_role("link", name="drop.pdf", exact=True)).to_have_count(0)
    await expect(page.get_by_role("link", name="keep.pdf", exact=True).first).to_be_visible()
    await page.reload()
    await expect(page.get_by_role("link", name="keep.pdf", exact=True).first).to_be_visible()
    await expect(page.get_by_role("link", name="drop.pdf", exact=True)).to_have_count(0)
    await ui.clean()


async def test_an_answer_that_is_markup_is_shown_as_text(ui: Browser, app: App, fake_provider: FakeOpenAI) -> None:
    fake_provider.behave(ALPHA, text=XSS)
    fake_provider.behave(CHAT, text=XSS)
    email = await app.account()
    await app.upload(email, "plain.pdf", make_pdf(["Nothing to see here."]))
    page = await ui.sign_in(email)
    await open_document(page, "plain.pdf")
    await page.get_by_role("radio", name="Summary", exact=True).check()
    await choose_models(page, ALPHA)
    await page.get_by_label("Pattern").select_option(value="parallel")
    await page.get_by_role("button", name="Start analysis").click()
    await expect(status(page, "Completed")).to_be_visible()
    await expect(region(page, ALPHA)).to_contain_text(XSS)
    assert await page.locator("img[src='x']").count() == 0

    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Chat", exact=True).click()
    await page.get_by_label("Model").select_option(value=CHAT)
    await page.get_by_role("textbox", name="Message").fill("Say something.")
    await page.get_by_role("button", name="Send").click()
    await expect(page.get_by_role("main").get_by_text(XSS).first).to_be_visible()
    assert await page.locator("img[src='x']").count() == 0
    # Nothing ran: no alert() dialog, no script error.
    await ui.clean()


async def test_chat_streams_and_stops(ui: Browser, app: App, fake_provider: FakeOpenAI) -> None:
    words = [f"word{i}" for i in range(60)]
    fake_provider.behave(CHAT, text=" ".join(words), chunk_delay=0.25)
    email = await app.account()
    page = await ui.sign_in(email, "/signin?next=%2Fchat")
    await expect(page).to_have_url(re.compile(r"/chat$"))
    await ui.accessible(page, "chat page")
    await page.get_by_label("Model").select_option(value=CHAT)
    await page.get_by_role("textbox", name="Message").fill("Count slowly, please.")
    await page.get_by_role("button", name="Send").click()

    main = page.get_by_role("main")
    await expect(main.get_by_text(re.compile(r"word0 word1 word2"))).to_be_visible()
    await page.get_by_role("button", name="Stop").click()
    # Stopped: the reply says so, nothing streams any more, and it never reached its end.
    await expect(main.get_by_text("Stopped.")).to_be_visible()
    await expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    await expect(page.get_by_label("Model")).to_be_enabled()
    assert await main.get_by_text(words[-1]).count() == 0
    assert fake_provider.calls(CHAT), "the chat never reached the provider"
    await ui.accessible(page, "chat page after a stop")
    await ui.clean()


async def test_a_spent_allowance_is_a_429_counting_down(ui: Browser, app: App, fake_provider: FakeOpenAI) -> None:
    # One answer that reports more tokens than the day's allowance: the next request is a 429.
    fake_provider.behave(CHAT, text="That was expensive.", prompt_tokens=TOKENS_PER_DAY + 1)
    email = await app.account()
    page = await ui.sign_in(email, "/signin?next=%2Fchat")
    await page.get_by_label("Model").select_option(value=CHAT)
    await page.get_by_role("textbox", name="Message").fill("First question.")
    await page.get_by_role("button", name="Send").click()
    main = page.get_by_role("main")
    await expect(main.get_by_text("That was expensive.")).to_be_visible()
    await page.get_by_role("textbox", name="Message").fill("Second question.")
    await page.get_by_role("button", name="Send").click()

    alert = page.get_by_role("alert").filter(has_text=re.compile(r"Try again in \d+ s"))
    await expect(alert).to_be_visible()
    first = int(re.search(r"Try again in (\d+) s", await alert.inner_text()).group(1))  # type: ignore[union-attr]
    # The allowance renews at midnight UTC: Retry-After is the seconds until then.
    assert 0 < first <= 86_401, first
    # It counts down.
    await page.wait_for_function(
        """(first) => [...document.querySelectorAll("[role=alert]")].some((a) => {
             const m = /Try again in (\\d+) s/.exec(a.textContent); return m && +m[1] < first; })""",
        arg=first,
    )
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Usage", exact=True).click()
    await expect(page.get_by_text("Budget left").first).to_be_visible()
    await ui.clean()


async def test_two_tabs_outlive_their_access_tokens(ui: Browser, app: App) -> None:
    email = await app.account()
    issued: list[str] = []
    refreshes: list[int] = []

    async def on_response(resp: Any) -> None:
        if resp.request.method != "POST":
            return
        if resp.url.endswith(("/api/v1/auth/login", "/api/v1/auth/refresh")):
            if resp.url.endswith("/refresh"):
                refreshes.append(resp.status)
            if resp.ok:
                issued.append((await resp.json())["access_token"])

    ui.context.on("response", on_response)
    first = await ui.sign_in(email)
    # A second tab of the same browser has no token in memory: the refresh cookie signs it in.
    second = await ui.open("/usage")
    await expect(second.get_by_role("heading", name="Usage", level=1)).to_be_visible()
    await expect(second.get_by_role("button", name="Sign out")).to_be_visible()
    assert len(issued) >= 2, issued

    # Wait until every token either tab holds has expired at the gateway.
    async with httpx.AsyncClient(base_url=app.stack.url("gateway"), timeout=10) as client:
        for token in list(issued):
            await eventually(
                lambda token=token: client.get("/api/v1/documents", headers=bearer(token)),
                lambda resp: resp.status_code == 401,
                what="the access token to expire",
                timeout=ACCESS_TTL * 3,
                interval=1.0,
            )
    before = len(refreshes)
    # Both tabs call the API at once with expired tokens: each refreshes (one at a time; the cookie
    # rotates) and carries on, neither is signed out.
    nav = "navigation"
    await asyncio.gather(
        first.get_by_role(nav, name="Main").get_by_role("link", name="Usage", exact=True).click(),
        second.get_by_role(nav, name="Main").get_by_role("link", name="Documents", exact=True).click(),
    )
    await expect(first.get_by_role("heading", name="Usage", level=1)).to_be_visible()
    await expect(first.get_by_text("Budget left").first).to_be_visible()
    await expect(second.get_by_role("heading", name="Documents", level=1)).to_be_visible()
    await expect(second.get_by_role("heading", name="Your documents")).to_be_visible()
    for page in (first, second):
        assert "/signin" not in page.url, page.url
        await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    new = refreshes[before:]
    assert new and all(code == 200 for code in new), f"refreshes after expiry: {new}"
    await ui.clean()


async def test_keyboard_only_sign_in_and_analysis(ui: Browser, app: App) -> None:
    email = await app.account()
    await app.upload(email, "keys.pdf", make_pdf(["Typed with the keyboard only."]))
    page = await ui.open("/signin")
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    await webapp.tab_to(page, webapp.labelled("Email"), "the Email field")
    await page.keyboard.type(email)
    await webapp.tab_to(page, webapp.labelled("Password"), "the Password field")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    await expect(page.get_by_role("link", name="keys.pdf", exact=True)).to_be_visible()
    await webapp.tab_to(page, webapp.named("keys.pdf", "a"), "the document's link")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("button", name="Start analysis")).to_be_visible()
    # The form lists the models once they have loaded.
    await expect(page.get_by_role("checkbox", name=ALPHA, exact=True)).to_be_visible()
    summary = await webapp.tab_to(page, lambda el: el["type"] == "radio", "the Kind radio group")
    # Arrow keys move within a radio group; find Summary.
    for _ in range(4):
        if summary["label"] == "Summary":
            break
        await page.keyboard.press("ArrowDown")
        summary = await webapp.focused(page) or {}
    assert summary.get("label") == "Summary", summary
    await page.keyboard.press("Space")
    # The models: tick the first alone (the form ticks the first three by default).
    box = await webapp.tab_to(page, lambda el: el["type"] == "checkbox", "the model checkboxes")
    while box["type"] == "checkbox" and box["label"] != "Run again even if the same analysis was made before":
        if box["checked"] != (box["label"] == ALPHA):
            await page.keyboard.press("Space")
        await page.keyboard.press("Tab")
        box = await webapp.focused(page) or {"type": ""}
    await expect(page.get_by_role("checkbox", name=ALPHA, exact=True)).to_be_checked()
    await expect(page.get_by_role("checkbox", name=BETA, exact=True)).not_to_be_checked()
    await webapp.tab_to(page, webapp.named("Start analysis", "button"), "Start analysis")
    await page.keyboard.press("Enter")

    await expect(status(page, "Completed")).to_be_visible()
    await expect(region(page, ALPHA)).to_contain_text("considered with care")
    await ui.clean()


async def test_every_page_passes_an_accessibility_scan(ui: Browser, app: App) -> None:
    email = await app.account()
    await app.upload(email, "scan.pdf", make_pdf(["A page to scan."]))
    page = await ui.sign_in(email)
    await ui.accessible(page, "documents page")
    await open_document(page, "scan.pdf")
    await ui.accessible(page, "document page")
    await choose_models(page, ALPHA)
    await page.get_by_label("Pattern").select_option(value="parallel")
    await page.get_by_role("button", name="Start analysis").click()
    await expect(status(page, "Completed")).to_be_visible()
    await ui.accessible(page, "analysis page")
    nav = page.get_by_role("navigation", name="Main")
    for link, heading in (("Chat", "Chat"), ("Usage", "Usage"), ("API keys", "API keys"), ("Account", "Account")):
        await nav.get_by_role("link", name=link, exact=True).click()
        await expect(page.get_by_role("heading", name=heading, level=1)).to_be_visible()
        await page.wait_for_load_state("networkidle")
        await ui.accessible(page, f"{link} page")
    await page.goto(app.origin + "/no/such/page")
    await ui.accessible(page, "not-found page")
    await ui.clean()
