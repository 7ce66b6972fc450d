from shared.migrations import run_env
from ultrai_llm.models import LlmBase

run_env(LlmBase.metadata)
