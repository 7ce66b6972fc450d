"""Run the auth service's migrations: `python -m ultrai_auth.migrate [revision]` (default: head)."""

from pathlib import Path

from shared.migrations import main
from shared.settings import load_settings
from ultrai_auth.settings import AuthSettings

if __name__ == "__main__":
    raise SystemExit(main(Path(__file__).parent / "migrations", load_settings(AuthSettings, "auth"), "auth"))
