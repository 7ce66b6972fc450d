"""Imports litellm the one way this service allows: offline (the bundled model cost map, no
telemetry), quiet, and dropping parameters a provider does not take instead of failing.

litellm takes about 3 s to import; only this service's modules import it, and only through here.
"""

from __future__ import annotations

import os

# Before the first import: the bundled cost map, so nothing reaches the network at start-up.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ.setdefault("LITELLM_LOG", "ERROR")

import litellm
from litellm.exceptions import RateLimitError
from litellm.integrations.custom_logger import CustomLogger
from litellm.llms.custom_llm import CustomLLM
from litellm.router import Router
from litellm.types.utils import Usage

litellm.suppress_debug_info = True
litellm.telemetry = False
litellm.drop_params = True
# Not re-exported by litellm's typed package, but the attribute its code reads.
litellm.set_verbose = False  # type: ignore[attr-defined]

from ultrai_llm import sdk_chunks  # noqa: E402  (after litellm, which imports the SDK)

sdk_chunks.install()  # streamed chunks built by pydantic's validator (ultrai_llm/sdk_chunks.py)

__all__ = ["CustomLLM", "CustomLogger", "RateLimitError", "Router", "Usage", "litellm"]
