"""The llm service's settings: provider keys, the models file, timeouts, the cache and budgets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator

from shared.settings import CommaList, ErasingSettings

# Provider -> (the environment variable holding its key, litellm model ids offered when it is set).
# The public name of a model is the litellm id without its provider prefix ("gemini-2.5-flash").
PROVIDER_DEFAULTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "openai": ("OPENAI_API_KEY", ("gpt-4o-mini", "gpt-4o")),
    "anthropic": ("ANTHROPIC_API_KEY", ("claude-sonnet-4-5", "claude-haiku-4-5")),
    "gemini": ("GEMINI_API_KEY", ("gemini/gemini-2.5-flash", "gemini/gemini-2.5-pro")),
    "groq": ("GROQ_API_KEY", ("groq/llama-3.3-70b-versatile",)),
    "mistral": ("MISTRAL_API_KEY", ("mistral/mistral-large-latest", "mistral/mistral-small-latest")),
    "cohere": ("COHERE_API_KEY", ("cohere_chat/command-a-03-2025",)),
    "deepseek": ("DEEPSEEK_API_KEY", ("deepseek/deepseek-chat",)),
    "openrouter": ("OPENROUTER_API_KEY", ("openrouter/openai/gpt-4o-mini",)),
}


class LlmSettings(ErasingSettings):
    openai_api_key: SecretStr | None = None
    anthropic_api_key: SecretStr | None = None
    gemini_api_key: SecretStr | None = None
    groq_api_key: SecretStr | None = None
    mistral_api_key: SecretStr | None = None
    cohere_api_key: SecretStr | None = None
    deepseek_api_key: SecretStr | None = None
    openrouter_api_key: SecretStr | None = None

    # A litellm Router model_list (YAML or JSON: {"model_list": [...]} or the bare list), for local
    # and self-hosted OpenAI-compatible servers (Ollama, vLLM, OpenRouter) with their api_base.
    llm_models_file: Path | None = None
    # The models an orchestration uses when the request names none (default: the first three).
    llm_default_models: CommaList = Field(default_factory=list)
    llm_synthesis_model: str | None = None
    # Fallbacks between models: JSON {"model": ["other", ...]} (litellm Router fallbacks).
    llm_fallbacks: dict[str, list[str]] = Field(default_factory=dict)

    # The offline demo models (demo/extract, demo/brief, demo/outline): true or false; unset: on
    # when ENVIRONMENT is development or test, off in staging and production.
    llm_demo_models: bool | None = None

    llm_timeout: float = Field(60.0, gt=0, le=600)  # per model and stage
    llm_budget_seconds: float = Field(180.0, gt=0, le=1800)  # a whole orchestration
    llm_num_retries: int = Field(2, ge=0, le=10)
    llm_retry_after: float = Field(0.0, ge=0, le=60)  # the least wait before a retry
    llm_allowed_fails: int = Field(3, ge=0, le=1000)  # failures per minute before a cooldown
    llm_cooldown_time: float = Field(30.0, ge=0, le=3600)
    llm_max_models: int = Field(8, ge=1, le=32)
    llm_max_prompt_chars: int = Field(400_000, ge=1000)

    enable_cache: bool = True
    cache_ttl: int = Field(3600, ge=1, le=30 * 86_400)

    # Per-user budgets over a UTC day; unset means none. Spent cost: 402; spent tokens: 429.
    llm_budget_usd_per_day: float | None = Field(None, gt=0)
    llm_budget_tokens_per_day: int | None = Field(None, gt=0)

    @field_validator("llm_fallbacks", mode="before")
    @classmethod
    def _fallbacks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        return value

    @field_validator("llm_models_file", "llm_demo_models", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("llm_models_file")
    @classmethod
    def _exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    def provider_keys(self) -> dict[str, str]:
        """Provider -> key, for the providers whose key is set."""
        keys = {}
        for provider, (env, _) in PROVIDER_DEFAULTS.items():
            secret: SecretStr | None = getattr(self, env.lower())
            if secret is not None and secret.get_secret_value().strip():
                keys[provider] = secret.get_secret_value().strip()
        return keys

    @property
    def demo_models(self) -> bool:
        """Whether the demo models are offered: LLM_DEMO_MODELS, or by default outside staging and
        production."""
        if self.llm_demo_models is not None:
            return self.llm_demo_models
        return not self.is_production
