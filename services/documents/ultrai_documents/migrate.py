"""Run the documents service's migrations: `python -m ultrai_documents.migrate [revision]` (default: head)."""

from pathlib import Path

from shared.migrations import main
from shared.settings import load_settings
from ultrai_documents.settings import DocumentsSettings

if __name__ == "__main__":
    raise SystemExit(
        main(Path(__file__).parent / "migrations", load_settings(DocumentsSettings, "documents"), "documents")
    )
