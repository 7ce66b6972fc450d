"""Which models this service offers: from provider keys in the environment and from the models file.

The result is a litellm Router ``model_list`` plus, per public model name, what the API shows and
validates against: provider, context window, output limit and price (from the models file's
``model_info`` or litellm's bundled model data).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ultrai_llm.demo.provider import CONTEXT_WINDOW, MAX_OUTPUT_TOKENS, PROVIDER, model_names
from ultrai_llm.engine_setup import litellm
from ultrai_llm.settings import PROVIDER_DEFAULTS, LlmSettings

log = logging.getLogger("ultrai_llm.catalog")

VIRTUAL_PREFIX = "ultrai/"
DEMO_PREFIX = "demo/"
PATTERNS = ("parallel", "peer_review", "synthesis", "ranked")
NO_PROVIDER_HINT = (
    "No LLM provider is configured: set OPENAI_API_KEY (or ANTHROPIC_API_KEY, GEMINI_API_KEY, GROQ_API_KEY, "
    "MISTRAL_API_KEY, COHERE_API_KEY, DEEPSEEK_API_KEY, OPENROUTER_API_KEY), or LLM_MODELS_FILE for a local "
    "or self-hosted OpenAI-compatible server."
)
DEMO_ONLY_HINT = (
    "Only the offline demo models (demo/*) are configured: they answer from the text they are given, "
    "without a language model. For real models set OPENAI_API_KEY (or ANTHROPIC_API_KEY, GEMINI_API_KEY, "
    "GROQ_API_KEY, MISTRAL_API_KEY, COHERE_API_KEY, DEEPSEEK_API_KEY, OPENROUTER_API_KEY), or LLM_MODELS_FILE."
)


class CatalogError(ValueError):
    """The models file is unusable (the service stops at start with this message)."""


@dataclass
class ModelSpec:
    name: str
    provider: str
    litellm_model: str
    source: str  # "env", "file" or "demo"
    deployments: int = 1
    context_window: int | None = None
    max_output_tokens: int | None = None
    input_cost_per_token: float = 0.0
    output_cost_per_token: float = 0.0
    # A JSON schema in ``response_format`` is honoured (litellm's model data, or the models file's
    # ``model_info.supports_response_schema``).
    response_schema: bool = False

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.input_cost_per_token + completion_tokens * self.output_cost_per_token

    def public(self, status: str = "available") -> dict[str, Any]:
        return {
            "name": self.name,
            "provider": self.provider,
            "status": status,
            "context_window": self.context_window,
            "max_output_tokens": self.max_output_tokens,
            "source": self.source,
            "demo": self.demo,
        }

    @property
    def demo(self) -> bool:
        return self.source == "demo"


@dataclass
class Catalog:
    model_list: list[dict[str, Any]] = field(default_factory=list)
    specs: dict[str, ModelSpec] = field(default_factory=dict)
    fallbacks: list[dict[str, list[str]]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.specs

    @property
    def demo_only(self) -> bool:
        """Models are offered, and every one of them is a demo model."""
        return not self.empty and all(spec.demo for spec in self.specs.values())

    def names(self) -> list[str]:
        return list(self.specs)

    def real_names(self) -> list[str]:
        return [name for name, spec in self.specs.items() if not spec.demo]


def _model_data(model: str) -> dict[str, Any]:
    try:
        return dict(litellm.get_model_info(model))
    except Exception:  # litellm raises a bare Exception for a model it has no data on
        return {}


def _provider(params: dict[str, Any]) -> str:
    if params.get("custom_llm_provider"):
        return str(params["custom_llm_provider"])
    model = str(params.get("model", ""))
    try:
        return str(litellm.get_llm_provider(model, api_base=params.get("api_base"))[1])
    except Exception:
        return model.split("/", 1)[0] if "/" in model else "unknown"


def _model_spec(name: str, params: dict[str, Any], info: dict[str, Any], source: str) -> ModelSpec:
    model = str(params["model"])
    data = _model_data(info.get("base_model") or model)

    def pick(key: str) -> Any:
        for where in (info, params, data):
            if where.get(key) is not None:
                return where[key]
        return None

    return ModelSpec(
        name=name,
        provider=_provider(params),
        litellm_model=model,
        source=source,
        context_window=pick("max_input_tokens"),
        max_output_tokens=pick("max_output_tokens") or pick("max_tokens"),
        input_cost_per_token=float(pick("input_cost_per_token") or 0.0),
        output_cost_per_token=float(pick("output_cost_per_token") or 0.0),
        response_schema=_supports_schema(model, pick("supports_response_schema")),
    )


def _supports_schema(model: str, given: Any) -> bool:
    """The models file's word, else litellm's (``litellm.supports_response_schema``)."""
    if given is not None:
        return bool(given)
    try:
        return bool(litellm.supports_response_schema(model=model))
    except Exception:  # a model litellm has no data on
        return False


def read_models_file(path: Path) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """The entries and fallbacks of a models file (YAML or JSON; a bare list or ``model_list``)."""
    text = path.read_text()
    try:
        data: Any = json.loads(text)
    except ValueError:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CatalogError(f"LLM_MODELS_FILE is neither JSON nor YAML: {exc}") from None
    fallbacks: dict[str, list[str]] = {}
    if isinstance(data, dict):
        for section in (data, data.get("router_settings") or {}, data.get("litellm_settings") or {}):
            for item in section.get("fallbacks") or []:
                if isinstance(item, dict):
                    fallbacks.update({str(k): [str(x) for x in v] for k, v in item.items()})
        data = data.get("model_list")
    if not isinstance(data, list):
        raise CatalogError("LLM_MODELS_FILE must hold a list of models (litellm Router model_list format)")
    entries = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("model_name"), str):
            raise CatalogError(f"LLM_MODELS_FILE entry {i}: model_name is missing")
        params = entry.get("litellm_params")
        if not isinstance(params, dict) or not isinstance(params.get("model"), str):
            raise CatalogError(f"LLM_MODELS_FILE entry {i} ({entry['model_name']}): litellm_params.model is missing")
        for reserved in (VIRTUAL_PREFIX, DEMO_PREFIX):
            if entry["model_name"].startswith(reserved):
                raise CatalogError(f"LLM_MODELS_FILE entry {i}: names starting with {reserved} are reserved")
        entries.append(entry)
    return entries, fallbacks


def build_catalog(settings: LlmSettings) -> Catalog:
    catalog = Catalog()
    fallbacks: dict[str, list[str]] = {}
    for provider, key in settings.provider_keys().items():
        for model in PROVIDER_DEFAULTS[provider][1]:
            name = model.split("/")[-1]
            params = {"model": model, "api_key": key}
            catalog.model_list.append({"model_name": name, "litellm_params": params})
            spec = _model_spec(name, params, {}, "env")
            spec.provider = provider
            catalog.specs[name] = spec
    if settings.llm_models_file is not None:
        entries, file_fallbacks = read_models_file(settings.llm_models_file)
        fallbacks.update(file_fallbacks)
        for entry in entries:
            name = entry["model_name"]
            params = dict(entry["litellm_params"])
            info = dict(entry.get("model_info") or {})
            known = catalog.specs.get(name)
            if known is not None and known.source == "env":
                # The file's definition replaces the default one of the same name.
                catalog.model_list = [e for e in catalog.model_list if e["model_name"] != name or "model_info" in e]
                known = None
            if known is not None:
                known.deployments += 1  # several deployments of one model: litellm balances them
            else:
                catalog.specs[name] = _model_spec(name, params, info, "file")
            catalog.model_list.append({"model_name": name, "litellm_params": params, "model_info": info})
    if settings.demo_models:
        add_demo_models(catalog)
    fallbacks.update(settings.llm_fallbacks)
    for model, others in fallbacks.items():
        unknown = [m for m in [model, *others] if m not in catalog.specs]
        if unknown:
            raise CatalogError(f"fallbacks name unknown models: {', '.join(unknown)}")
        catalog.fallbacks.append({model: list(others)})
    return catalog


def add_demo_models(catalog: Catalog) -> None:
    """The offline demo models, after the real ones (so that defaults pick real models first)."""
    for name in model_names():
        info = {"max_input_tokens": CONTEXT_WINDOW, "max_output_tokens": MAX_OUTPUT_TOKENS}
        params = {"model": name, "custom_llm_provider": PROVIDER}
        catalog.model_list.append({"model_name": name, "litellm_params": params, "model_info": info})
        catalog.specs[name] = ModelSpec(
            name=name,
            provider=PROVIDER,
            litellm_model=name,
            source="demo",
            context_window=CONTEXT_WINDOW,
            max_output_tokens=MAX_OUTPUT_TOKENS,
        )


def load_catalog(settings: LlmSettings, service: str) -> Catalog:
    """The catalog, or the process stops with exit status 2 and one line naming the setting."""
    try:
        return build_catalog(settings)
    except (CatalogError, OSError) as exc:
        print(f"{service}: invalid setting: LLM_MODELS_FILE: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
