"""The llm service as this service uses it: its client, its model list, one model's answer.

``ModelCatalog`` is the one place that reads the llm service's model list: the default models of an
analysis and the context windows that size its requests both come from it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from shared.client import ServiceClient
from shared.health import Check, CheckResult
from shared.tokens import ON_BEHALF_HEADER, ON_BEHALF_KEY_HEADER, ServiceTokenSource
from ultrai_documents.settings import DocumentsSettings

MODELS_PATH = "/api/v1/llm/models"
ORCHESTRATE_PATH = "/api/v1/llm/orchestrate"
ESTIMATE_PATH = ORCHESTRATE_PATH + "/estimate"
# What a malformed or unreachable answer can raise while it is read (RuntimeError: no service token).
_UNREADABLE = (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError, RuntimeError)


class LLMError(Exception):
    """A model's answer that did not come: the reason is shown to the user."""


def llm_client(settings: DocumentsSettings, tokens: ServiceTokenSource) -> ServiceClient:
    return ServiceClient(
        "llm",
        settings.llm_url,
        token=tokens,
        timeout=httpx.Timeout(connect=2.0, read=settings.llm_timeout_seconds, write=30.0, pool=10.0),
    )


def llm_health_check(llm: ServiceClient) -> Check:
    async def probe() -> CheckResult:
        try:
            resp = await llm.http.get("/live", timeout=1.0, headers={"Authorization": ""})
        except httpx.HTTPError:
            return CheckResult("warn", "llm is unreachable; analyses wait for it")
        return CheckResult("pass" if resp.status_code == 200 else "warn")

    # Analyses need the llm service, but uploads and reads do not: never 'fail' for it.
    return Check("llm", probe, component_type="service", critical=False, timeout=1.5)


class ModelCatalog:
    """The llm service's models: names of the available ones, and context windows (kept five
    minutes; the last good answer stands while the llm service cannot give one)."""

    WINDOWS_TTL = 300.0

    def __init__(self, llm: ServiceClient) -> None:
        self.llm = llm
        self._windows: dict[str, int] = {}
        self._windows_at = -1e9

    async def _models(self) -> list[Any]:
        resp = await self.llm.get(MODELS_PATH, timeout=5.0)
        if resp.status_code != 200:
            return []
        models: list[Any] = resp.json().get("models", [])
        return models

    async def available(self) -> list[str]:
        """The names of the models the llm service does not report unavailable, leaving out its
        offline demo models (``demo: true``) unless they are all it has; none when it cannot be
        asked."""
        try:
            models = [m for m in await self._models() if m.get("status", "available") != "unavailable"]
            real = [m for m in models if not m.get("demo")]
            return [m["name"] for m in real or models]
        except _UNREADABLE:
            return []

    async def context_windows(self) -> dict[str, int]:
        """Model name -> context window in tokens, for the models that report one."""
        if time.monotonic() - self._windows_at < self.WINDOWS_TTL:
            return self._windows
        try:
            models = await self._models()
            self._windows = {
                m["name"]: int(m["context_window"]) for m in models if isinstance(m.get("context_window"), int)
            }
            self._windows_at = time.monotonic()
        except _UNREADABLE:
            pass  # the last windows stand; asked again next time
        return self._windows


@dataclass(frozen=True)
class Caller:
    """Whom the llm service is asked for: the user, and the API key the user acted with (by id;
    None for an access token), so the calls are counted and limited as the key's."""

    user_id: str
    key_id: str | None = None

    def headers(self) -> dict[str, str]:
        headers = {ON_BEHALF_HEADER: self.user_id}
        if self.key_id is not None:
            headers[ON_BEHALF_KEY_HEADER] = self.key_id
        return headers


@dataclass
class Usage:
    """Tokens and cost of the requests made for one answer, as the llm service reports them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, item: dict[str, Any]) -> None:
        self.prompt_tokens += int(item.get("prompt_tokens") or 0)
        self.completion_tokens += int(item.get("completion_tokens") or 0)
        self.cost_usd += float(item.get("cost_usd") or 0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
        }


def orchestrate_body(model: str, prompt: str, context: list[str]) -> dict[str, Any]:
    """The orchestrate request of one step of an analysis: one model, one prompt over ``context``
    (what ``ask`` sends, and what the analysis' estimate asks the cost of)."""
    return {"prompt": prompt, "context": context, "models": [model], "pattern": "parallel", "stream": False}


async def ask(
    llm: ServiceClient,
    caller: Caller,
    model: str,
    prompt: str,
    context: list[str],
    *,
    read_seconds: float,
    usage: Usage,
) -> str:
    """One model's answer to ``prompt`` over ``context``, asked for ``caller`` and awaited up to
    ``read_seconds``; its tokens and cost are added to ``usage`` (also when the model failed).
    Raises LLMError with the reason."""
    try:
        body = orchestrate_body(model, prompt, context)
        resp = await llm.post(ORCHESTRATE_PATH, json=body, headers=caller.headers(), timeout=read_seconds)
    except httpx.HTTPError as exc:
        raise LLMError(f"the llm service could not be reached ({type(exc).__name__})") from None
    except RuntimeError as exc:  # no service token (auth unreachable or refused)
        raise LLMError(f"no service token for the llm service ({exc})") from None
    if resp.status_code != 200:
        raise LLMError(problem_detail(resp))
    try:
        answer = resp.json()
        item = next((r for r in answer.get("results", []) if r.get("model") == model), None)
    except (ValueError, AttributeError):
        raise LLMError("the llm service answered with an unreadable body") from None
    if item is None:
        raise LLMError("the llm service's answer has no result for this model")
    usage.add(item)
    if item.get("status") != "ok":
        raise LLMError(str(item.get("error") or "the model failed"))
    return str(item.get("text") or "")


def problem_detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        detail = body.get("detail") or body.get("title")
    except (ValueError, AttributeError):
        detail = None
    return f"llm service answered {resp.status_code}" + (f": {detail}" if detail else "")
