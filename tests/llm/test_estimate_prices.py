"""The estimate's prices are litellm's cost map's: for models litellm knows, the cost the estimate
computes from the catalog equals ``litellm.cost_per_token``."""

from __future__ import annotations

import pytest

from tests.llm.conftest import settings
from ultrai_llm.catalog import build_catalog
from ultrai_llm.engine_setup import litellm


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4o"])
def test_catalog_prices_are_litellms_cost_map(model: str) -> None:
    spec = build_catalog(settings(openai_api_key="sk-test-not-used")).specs[model]
    prompt_cost, completion_cost = litellm.cost_per_token(model=model, prompt_tokens=1234, completion_tokens=567)
    assert spec.input_cost_per_token > 0 and spec.output_cost_per_token > 0
    assert spec.cost(1234, 0) == pytest.approx(prompt_cost, rel=1e-12)
    assert spec.cost(0, 567) == pytest.approx(completion_cost, rel=1e-12)
    # litellm says whether the model takes a JSON schema in response_format; the catalog keeps it.
    assert spec.response_schema == litellm.supports_response_schema(model=model)
