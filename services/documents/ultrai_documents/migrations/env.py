from shared.migrations import run_env
from ultrai_documents.models import DocumentsBase

run_env(DocumentsBase.metadata)
