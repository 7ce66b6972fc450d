"""One file to text: detect its type, hand it to its format's extractor, check what came out.

Every format is checked before its parser touches it (zip directory, XML prologue, nesting depth,
PDF decompression and page caps); the sandbox's rlimits are the backstop for what slips past.
"""

from __future__ import annotations

from ultrai_documents.extraction.base import Extracted, ExtractionError, Limits, unsupported
from ultrai_documents.extraction.detection import check_name_matches, sniff_binary, zip_tail_signature
from ultrai_documents.extraction.docx import extract_docx
from ultrai_documents.extraction.pdf import extract_pdf
from ultrai_documents.extraction.text import extract_text_family


def extract_file(path: str, name: str | None, limits: Limits) -> Extracted:
    with open(path, "rb") as fh:
        head = fh.read(8192)
    if not head:
        raise ExtractionError(422, "The file is empty.")
    kind = sniff_binary(head)
    if kind == "pdf":
        if zip_tail_signature(path):
            raise unsupported("The file is both a PDF and a zip archive (a polyglot)")
        check_name_matches("pdf", name)
        result = extract_pdf(path, limits)
    elif kind == "zip":
        result = extract_docx(path, name, limits)
    else:
        with open(path, "rb") as fh:
            data = fh.read()
        result = extract_text_family(data, limits)
        check_name_matches(result.kind, name)
    # NUL is not text (and PostgreSQL text columns refuse it).
    result.text = result.text.replace("\x00", "")
    if len(result.text) > limits.max_text_chars:
        raise ExtractionError(
            422, f"The document's text is longer than the limit of {limits.max_text_chars:,} characters."
        )
    if not result.text.strip():
        raise ExtractionError(422, "No text could be extracted from the file (it may hold only images).")
    return result
