"""Type detection and text extraction, run inside the extraction worker process (see worker.py).

The type comes from the content only (magic bytes, then structure); the file name's extension is
used for one thing: a name that claims another type than the content is refused as mislabelled.
Every format is checked before its parser touches it (zip directory, XML prologue, nesting depth,
PDF decompression and page caps); the worker's rlimits are the backstop for what slips past.

Nothing here imports the service (or ``shared``): the worker starts fast and holds no secrets.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import re
import struct
import zipfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import PurePosixPath

SUPPORTED = ("PDF", "DOCX", "plain text", "Markdown", "HTML", "CSV", "JSON")

MEDIA_TYPES = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "text": "text/plain; charset=utf-8",
    "markdown": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
}

# Extension -> the kinds a file with that name may hold. Text-family names accept any text kind
# (a .txt of Markdown is fine); binary formats must match exactly.
_TEXT_KINDS = {"text", "markdown", "html", "csv", "json"}
EXTENSIONS = {
    "pdf": {"pdf"},
    "docx": {"docx"},
    "txt": _TEXT_KINDS,
    "text": _TEXT_KINDS,
    "md": _TEXT_KINDS,
    "markdown": _TEXT_KINDS,
    "csv": _TEXT_KINDS,
    "tsv": _TEXT_KINDS,
    "json": _TEXT_KINDS,
    "htm": {"html", "text", "markdown"},
    "html": {"html", "text", "markdown"},
}

# Signatures of common formats we do not take (refused before any decoding attempt).
_BINARY_MAGIC = (
    b"\x89PNG",
    b"\xff\xd8\xff",
    b"GIF8",
    b"MZ",
    b"\x7fELF",
    b"\xca\xfe\xba\xbe",
    b"\xcf\xfa\xed\xfe",
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ",
    b"7z\xbc\xaf",
    b"Rar!",
    b"\xd0\xcf\x11\xe0",  # OLE (old .doc/.xls)
    b"RIFF",
    b"OggS",
    b"ID3",
    b"fLaC",
    b"\x00\x00\x01\x00",
    b"II*\x00",
    b"MM\x00*",
    b"wOFF",
    b"\x00asm",
    b"SQLite format 3",
)


class ExtractionError(Exception):
    """A file we refuse. ``status`` is the HTTP answer: 415 (unsupported type) or 422 (bad/hostile)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def unsupported(what: str) -> ExtractionError:
    return ExtractionError(415, f"{what}. Supported types: {', '.join(SUPPORTED)}.")


@dataclass
class Limits:
    max_text_chars: int = 30_000_000
    docx_max_entries: int = 2000
    docx_max_uncompressed_bytes: int = 200 * 1024 * 1024
    docx_max_ratio: float = 100.0
    docx_max_part_bytes: int = 100 * 1024 * 1024
    pdf_max_pages: int = 2000
    pdf_max_stream_bytes: int = 64 * 1024 * 1024
    max_nesting_depth: int = 256
    chunk_tokens: int = 1500
    chunk_overlap_tokens: int = 150


@dataclass
class Extracted:
    kind: str
    text: str
    page_count: int | None = None
    encoding: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.kind]


# --------------------------------------------------------------------------------------- detection


def extension_of(name: str | None) -> str | None:
    if not name:
        return None
    suffix = PurePosixPath(name.replace("\\", "/")).suffix.lower().lstrip(".")
    return suffix or None


def check_name_matches(kind: str, name: str | None) -> None:
    """A name whose extension claims another type than the content is mislabelled: 415."""
    ext = extension_of(name)
    if ext is None or ext not in EXTENSIONS:
        return
    if kind not in EXTENSIONS[ext]:
        raise unsupported(f"The file is named .{ext} but its content is {kind_label(kind)}")


def kind_label(kind: str) -> str:
    return {
        "pdf": "a PDF",
        "docx": "a Word document",
        "text": "plain text",
        "markdown": "Markdown",
        "html": "HTML",
        "csv": "CSV",
        "json": "JSON",
    }.get(kind, kind)


def sniff_binary(head: bytes) -> str | None:
    """'pdf', 'docx-candidate' (a zip), or None for 'maybe text'; raises 415 for known other formats."""
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith((b"PK\x05\x06", b"PK\x07\x08")):
        raise unsupported("The file is an empty or split zip archive")
    for magic in _BINARY_MAGIC:
        if head.startswith(magic):
            raise unsupported("The file's content is not a supported document type (binary format)")
    return None


def _tail(path: str) -> bytes:
    """The last 64 KiB + 22 bytes: where a zip's end-of-central-directory record must be."""
    with open(path, "rb") as fh:
        fh.seek(0, io.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 65_557))
        return fh.read()


def _zip_tail_signature(path: str) -> bool:
    """Whether the file ends in a zip end-of-central-directory record (a PDF/zip polyglot)."""
    return b"PK\x05\x06" in _tail(path)


def extract_file(path: str, name: str | None, limits: Limits) -> Extracted:
    with open(path, "rb") as fh:
        head = fh.read(8192)
    if not head:
        raise ExtractionError(422, "The file is empty.")
    kind = sniff_binary(head)
    if kind == "pdf":
        if _zip_tail_signature(path):
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


# --------------------------------------------------------------------------------------------- PDF


def extract_pdf(path: str, limits: Limits) -> Extracted:
    import pypdf
    from pypdf.errors import LimitReachedError, PdfReadError, PyPdfError

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
    try:
        reader = pypdf.PdfReader(path, strict=False)
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")
            except Exception:
                ok = 0
            if not ok:
                raise ExtractionError(422, "The PDF is password-protected; upload an unprotected copy.")
        pages = len(reader.pages)
        if pages > limits.pdf_max_pages:
            raise ExtractionError(422, f"The PDF has {pages:,} pages; the limit is {limits.pdf_max_pages:,}.")
        if pages == 0:
            raise ExtractionError(422, "The PDF has no pages.")
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
    except ExtractionError:
        raise
    except (PdfReadError, PyPdfError) as exc:
        raise ExtractionError(422, f"The PDF is damaged or unreadable ({_short(exc)}).") from None
    except (MemoryError, RecursionError):
        raise ExtractionError(422, "The PDF is too complex to read within the limits.") from None
    except Exception as exc:  # pypdf raises plain errors on some broken files
        raise ExtractionError(422, f"The PDF is damaged or unreadable ({type(exc).__name__}).") from None
    return Extracted("pdf", "\n\n".join(parts).strip(), page_count=pages)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


# -------------------------------------------------------------------------------------------- DOCX

_EOCD = b"PK\x05\x06"


def _declared_entry_count(path: str) -> int:
    """The entry count from the end-of-central-directory record, read without parsing the directory."""
    tail = _tail(path)
    pos = tail.rfind(_EOCD)
    if pos < 0 or len(tail) - pos < 22:
        raise ExtractionError(422, "The Word document is damaged (its zip directory is missing).")
    (_sig, _disk, _cd_disk, _n_disk, total, _cd_size, _cd_off, _clen) = struct.unpack(
        "<4sHHHHIIH", tail[pos : pos + 22]
    )
    # 0xFFFF: ZIP64, 65,535 entries or more (far beyond any Word document).
    return total


def _unsafe_name(name: str) -> bool:
    if not name or "\x00" in name or "\\" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return True
    return any(part == ".." for part in name.split("/"))


def check_docx_zip(path: str, limits: Limits) -> list[zipfile.ZipInfo]:
    """Every check on the zip before python-docx reads a byte of it."""
    count = _declared_entry_count(path)
    if count > limits.docx_max_entries:
        raise ExtractionError(
            422, f"The Word document holds too many parts ({count:,}; the limit is {limits.docx_max_entries:,})."
        )
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
        raise ExtractionError(422, f"The Word document is damaged ({_short(exc)}).") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.docx_max_entries:
            raise ExtractionError(422, "The Word document holds too many parts.")
        names = {i.filename for i in infos}
        if "[Content_Types].xml" not in names or "word/document.xml" not in names:
            raise unsupported("The file is a zip archive but not a Word (.docx) document")
        total = 0
        spans = []
        with open(path, "rb") as raw:
            for info in infos:
                if _unsafe_name(info.filename):
                    raise ExtractionError(422, "The Word document has a part with an unsafe path.")
                mode = (info.external_attr >> 16) & 0o170000
                if mode == 0o120000:
                    raise ExtractionError(422, "The Word document contains a symbolic link.")
                if info.flag_bits & 0x1:
                    raise ExtractionError(422, "The Word document is encrypted.")
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise ExtractionError(422, "The Word document uses an unsupported compression method.")
                if info.file_size > limits.docx_max_part_bytes:
                    raise ExtractionError(422, "The Word document has a part that is too large once uncompressed.")
                total += info.file_size
                if total > limits.docx_max_uncompressed_bytes:
                    raise ExtractionError(
                        422, "The Word document is too large once uncompressed (a possible zip bomb)."
                    )
                if info.file_size > 1024 * 1024 and info.file_size > limits.docx_max_ratio * max(info.compress_size, 1):
                    raise ExtractionError(422, "The Word document compresses suspiciously well (a possible zip bomb).")
                # The local header's own length, to find where this entry's bytes really end.
                raw.seek(info.header_offset)
                local = raw.read(30)
                if len(local) < 30 or local[:4] != b"PK\x03\x04":
                    raise ExtractionError(422, "The Word document is damaged (bad part header).")
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                spans.append((info.header_offset, info.header_offset + 30 + name_len + extra_len + info.compress_size))
        spans.sort()
        for (_start, end), (next_start, _next_end) in itertools.pairwise(spans):
            if next_start < end:
                raise ExtractionError(422, "The Word document's parts overlap (a possible zip bomb).")
        compressed = sum(i.compress_size for i in infos)
        if total > 10 * 1024 * 1024 and total > limits.docx_max_ratio * max(compressed, 1):
            raise ExtractionError(422, "The Word document compresses suspiciously well (a possible zip bomb).")
        # Each XML part: no DOCTYPE/entities, bounded depth; no archive nested inside (outside the
        # embeddings folder, whose objects we never open).
        for info in infos:
            lower = info.filename.lower()
            with zf.open(info) as part:
                head = part.read(4)
            if lower.endswith(".zip") or (head == b"PK\x03\x04" and not lower.startswith("word/embeddings/")):
                raise ExtractionError(422, "The Word document contains a nested archive.")
            if lower.endswith((".xml", ".rels")):
                _check_xml_part(zf, info, limits)
        return infos


_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def _check_xml_part(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits) -> None:
    from lxml import etree

    # Streamed: DOCTYPE/ENTITY anywhere (checked across block boundaries), then depth by iterparse
    # with lxml's own size limits kept (no huge_tree) and entities never resolved.
    tail = b""
    with zf.open(info) as part:
        while True:
            block = part.read(1 << 16)
            if not block:
                break
            if _DOCTYPE.search(tail + block):
                raise ExtractionError(422, "The Word document contains a DOCTYPE or entity declarations (refused).")
            tail = block[-16:]
    depth = 0
    try:
        with zf.open(info) as part:
            for event, _el in etree.iterparse(
                part, events=("start", "end"), resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False
            ):
                if event == "start":
                    depth += 1
                    if depth > limits.max_nesting_depth:
                        raise ExtractionError(422, "The Word document's XML is nested too deeply.")
                else:
                    depth -= 1
                    _el.clear()
    except etree.XMLSyntaxError as exc:
        raise ExtractionError(422, f"The Word document's XML is malformed ({_short(exc)}).") from None


def extract_docx(path: str, name: str | None, limits: Limits) -> Extracted:
    check_docx_zip(path, limits)
    check_name_matches("docx", name)
    import docx
    from docx.table import Table

    try:
        document = docx.Document(path)
        parts: list[str] = []
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                for row in block.rows:
                    parts.append("\t".join(cell.text.strip() for cell in row.cells))
                parts.append("")
            else:
                parts.append(block.text)
    except ExtractionError:
        raise
    except (MemoryError, RecursionError):
        raise ExtractionError(422, "The Word document is too complex to read within the limits.") from None
    except Exception as exc:
        raise ExtractionError(422, f"The Word document is damaged or unreadable ({type(exc).__name__}).") from None
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(parts)).strip()
    return Extracted("docx", text)


# -------------------------------------------------------------------------------------- text family

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


_PREFERRED = ("cp1252", "latin_1", "iso8859_15", "cp1250", "cp1251")


def decode_text(data: bytes) -> tuple[str, str]:
    """Bytes in any common encoding -> (text, encoding name); 415 when it is not text at all."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding.replace("-sig", "")
            except UnicodeDecodeError:
                raise ExtractionError(422, f"The text is not valid {encoding}.") from None
    try:
        text = data.decode("utf-8")
        encoding = "utf-8" if any(b > 0x7F for b in data[:65536]) or not data.isascii() else "ascii"
    except UnicodeDecodeError:
        if b"\x00" in data[:65536] and data[:65536].count(b"\x00") * 4 < len(data[:65536]):
            # A few NULs in otherwise non-UTF-8 bytes: binary, not UTF-16 without a BOM.
            raise unsupported("The file's content is not a supported document type (binary data)") from None
        from charset_normalizer import from_bytes

        matches = list(from_bytes(data[: 4 * 1024 * 1024]))
        if not matches:
            raise unsupported("The file's content is not a supported document type (binary data)") from None
        # Short Western text fits several code pages equally well; among the equally good, the
        # most common one wins (charset-normalizer would otherwise pick the first in its own order).
        best = matches[0]
        tied = [m.encoding for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
        encoding = next((e for e in _PREFERRED if e in tied), best.encoding)
        try:
            text = data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            raise unsupported("The file's content is not text in a recognised encoding") from None
    sample = text[:65536]
    controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\t\n\r\f\v")
    if sample and controls / len(sample) > 0.01:
        raise unsupported("The file's content is not a supported document type (binary data)")
    return text.replace("\x00", ""), encoding


def json_depth_ok(text: str, max_depth: int) -> bool:
    """Nesting depth of JSON, measured without parsing (json.loads recurses)."""
    depth = 0
    in_string = False
    escape = False
    for ch in text:
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return False
        elif ch in "]}":
            depth -= 1
    return True


_HTML_START = re.compile(r"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html[\s>]|head[\s>]|body[\s>])", re.I | re.S)
_HTML_TAGS = re.compile(r"<(html|head|body|div|p|span|table|script|style|meta|title|a\s+href)[\s>/]", re.I)
_MD_MARKERS = re.compile(
    r"^(#{1,6}\s+\S|```|~~~|\s*[-*+]\s+\S|\s*\d+\.\s+\S|>\s|\|.*\|\s*$)|\[[^\]]+\]\([^)]+\)|\*\*[^*]+\*\*",
    re.M,
)


def classify_text(text: str) -> str:
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            json.loads(text)
            return "json"
        except (ValueError, RecursionError):
            pass
    head = text[:8192]
    if _HTML_START.match(head) or len(_HTML_TAGS.findall(head)) >= 3:
        return "html"
    if _looks_like_csv(text[:16384]):
        return "csv"
    if len(_MD_MARKERS.findall(text[:16384])) >= 2:
        return "markdown"
    return "text"


def _looks_like_csv(sample: str) -> bool:
    lines = [line for line in sample.splitlines()[:20] if line.strip()]
    if len(lines) < 2:
        return False
    if len(sample.splitlines()) > 20:
        lines = lines[:-1]  # the last line of a sample may be cut
    for delimiter in (",", ";", "\t", "|"):
        try:
            rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
        except csv.Error:
            continue
        widths = {len(r) for r in rows}
        if len(widths) == 1 and widths.pop() >= 2:
            # Prose with commas has long cells; a table's cells are short.
            cells = [c for r in rows for c in r]
            if sum(len(c) for c in cells) / max(len(cells), 1) < 60:
                return True
    return False


class _HTMLText(HTMLParser):
    _SKIP = {"script", "style", "template", "noscript", "head"}
    _VOID = {
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr",
        "p", "li", "dt", "dd", "tr", "td", "th", "option", "thead", "tbody", "tfoot",
    }  # fmt: skip
    _BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "table", "hr"}

    def __init__(self, max_depth: int) -> None:
        super().__init__(convert_charrefs=True)
        self.max_depth = max_depth
        self.depth = 0
        self.skip = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in self._BLOCK:
            self.parts.append("\n")
        if tag in self._SKIP:
            self.skip += 1
        if tag not in self._VOID:
            self.depth += 1
            if self.depth > self.max_depth:
                raise ExtractionError(422, "The HTML is nested too deeply.")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self.skip:
            self.skip -= 1
        if tag not in self._VOID and self.depth:
            self.depth -= 1
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def html_to_text(html: str, max_depth: int) -> str:
    parser = _HTMLText(max_depth)
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def extract_text_family(data: bytes, limits: Limits) -> Extracted:
    text, encoding = decode_text(data)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.lstrip()[:1] in ("{", "[") and not json_depth_ok(text, limits.max_nesting_depth):
        raise ExtractionError(422, f"The JSON is nested deeper than {limits.max_nesting_depth} levels.")
    kind = classify_text(text)
    if kind == "html":
        return Extracted("html", html_to_text(text, limits.max_nesting_depth), encoding=encoding)
    return Extracted(kind, text.strip(), encoding=encoding)
