"""PDF: pypdf with every decompression and page-tree cap set from the limits before it reads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ultrai_documents.extraction.base import Extracted, ExtractionError, Limits, short_reason

if TYPE_CHECKING:
    from pypdf import PdfReader


def extract_pdf(path: str, limits: Limits) -> Extracted:
    import pypdf
    from pypdf.errors import PdfReadError, PyPdfError

    _configure(limits)
    try:
        reader = pypdf.PdfReader(path, strict=False)
        _decrypt(reader)
        pages = len(reader.pages)
        if pages > limits.pdf_max_pages:
            raise ExtractionError(422, f"The PDF has {pages:,} pages; the limit is {limits.pdf_max_pages:,}.")
        if pages == 0:
            raise ExtractionError(422, "The PDF has no pages.")
        parts = _page_texts(reader, limits)
    except ExtractionError:
        raise
    except (PdfReadError, PyPdfError) as exc:
        raise ExtractionError(422, f"The PDF is damaged or unreadable ({short_reason(exc)}).") from None
    except (MemoryError, RecursionError):
        raise ExtractionError(422, "The PDF is too complex to read within the limits.") from None
    except Exception as exc:  # pypdf raises plain errors on some broken files
        raise ExtractionError(422, f"The PDF is damaged or unreadable ({type(exc).__name__}).") from None
    return Extracted("pdf", "\n\n".join(parts).strip(), page_count=pages)


def _configure(limits: Limits) -> None:
    import pypdf

    cap = limits.pdf_max_stream_bytes
    pypdf.overwrite_configuration(
        disable_legacy_handling=True,
        maximum_declared_stream_length=cap,
        array_based_stream_maximum_output_length=cap,
        zlib_maximum_output_length=cap,
        lzw_maximum_output_length=cap,
        run_length_maximum_output_length=cap,
        jbig2_maximum_output_length=cap,
        brotli_maximum_output_length=cap,
        image_maximum_buffer_size=cap,
        stream_decoding_work_maximum_length=cap * 4,
        page_tree_maximum_entries=limits.pdf_max_pages * 2 + 100,
        page_tree_maximum_page_entries=limits.pdf_max_pages * 4 + 100,
        jbig2dec_binary=None,
    )


def _decrypt(reader: PdfReader) -> None:
    """An encrypted PDF is read only when it opens with the empty password."""
    from pypdf import PasswordType

    if not reader.is_encrypted:
        return
    try:
        decrypted = reader.decrypt("") != PasswordType.NOT_DECRYPTED
    except Exception:
        decrypted = False
    if not decrypted:
        raise ExtractionError(422, "The PDF is password-protected; upload an unprotected copy.")


def _page_texts(reader: PdfReader, limits: Limits) -> list[str]:
    from pypdf.errors import LimitReachedError

    parts: list[str] = []
    total = 0
    for page in reader.pages:
        text = page.extract_text() or ""
        if not text.strip() and "/Contents" in page:
            # extract_text hides a decompression limit as "no text": ask the stream itself.
            try:
                contents = page.get_contents()
                if contents is not None:
                    contents.get_data()
            except LimitReachedError:
                raise ExtractionError(
                    422, "The PDF holds a stream that inflates past the size limit (a possible PDF bomb)."
                ) from None
        total += len(text)
        if total > limits.max_text_chars:
            raise ExtractionError(
                422, f"The document's text is longer than the limit of {limits.max_text_chars:,} characters."
            )
        parts.append(text.strip())
    return parts
