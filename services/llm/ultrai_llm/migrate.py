"""Run the llm service's migrations: `python -m ultrai_llm.migrate [revision]` (default: head)."""

from pathlib import Path

from shared.migrations import main
from shared.settings import load_settings
from ultrai_llm.settings import LlmSettings

if __name__ == "__main__":
    raise SystemExit(main(Path(__file__).parent / "migrations", load_settings(LlmSettings, "llm"), "llm"))
