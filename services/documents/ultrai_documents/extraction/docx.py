"""DOCX: the zip and each XML part checked (sizes, ratios, paths, overlaps, DOCTYPE, depth) before
python-docx reads a byte of it."""

from __future__ import annotations

import itertools
import re
import struct
import zipfile

from ultrai_documents.extraction.base import Extracted, ExtractionError, Limits, short_reason, unsupported
from ultrai_documents.extraction.detection import check_name_matches, file_tail

_EOCD = b"PK\x05\x06"
_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


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
        raise ExtractionError(422, f"The Word document is damaged ({short_reason(exc)}).") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.docx_max_entries:
            raise ExtractionError(422, "The Word document holds too many parts.")
        names = {i.filename for i in infos}
        if "[Content_Types].xml" not in names or "word/document.xml" not in names:
            raise unsupported("The file is a zip archive but not a Word (.docx) document")
        total, spans = _check_entries(path, infos, limits)
        spans.sort()
        for (_start, end), (next_start, _next_end) in itertools.pairwise(spans):
            if next_start < end:
                raise ExtractionError(422, "The Word document's parts overlap (a possible zip bomb).")
        compressed = sum(i.compress_size for i in infos)
        if total > 10 * 1024 * 1024 and total > limits.docx_max_ratio * max(compressed, 1):
            raise ExtractionError(422, "The Word document compresses suspiciously well (a possible zip bomb).")
        _check_contents(zf, infos, limits)
        return infos


def _declared_entry_count(path: str) -> int:
    """The entry count from the end-of-central-directory record, read without parsing the directory."""
    tail = file_tail(path)
    pos = tail.rfind(_EOCD)
    if pos < 0 or len(tail) - pos < 22:
        raise ExtractionError(422, "The Word document is damaged (its zip directory is missing).")
    (_sig, _disk, _cd_disk, _n_disk, total, _cd_size, _cd_off, _clen) = struct.unpack(
        "<4sHHHHIIH", tail[pos : pos + 22]
    )
    # 0xFFFF: ZIP64, 65,535 entries or more (far beyond any Word document).
    return int(total)


def _unsafe_name(name: str) -> bool:
    if not name or "\x00" in name or "\\" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return True
    return any(part == ".." for part in name.split("/"))


def _check_entries(path: str, infos: list[zipfile.ZipInfo], limits: Limits) -> tuple[int, list[tuple[int, int]]]:
    """Each entry's name, type, encryption, method and sizes. Returns the total uncompressed size
    and each entry's byte span in the file (to find overlapping entries)."""
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
                raise ExtractionError(422, "The Word document is too large once uncompressed (a possible zip bomb).")
            if info.file_size > 1024 * 1024 and info.file_size > limits.docx_max_ratio * max(info.compress_size, 1):
                raise ExtractionError(422, "The Word document compresses suspiciously well (a possible zip bomb).")
            # The local header's own length, to find where this entry's bytes really end.
            raw.seek(info.header_offset)
            local = raw.read(30)
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                raise ExtractionError(422, "The Word document is damaged (bad part header).")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            spans.append((info.header_offset, info.header_offset + 30 + name_len + extra_len + info.compress_size))
    return total, spans


def _check_contents(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], limits: Limits) -> None:
    """Each XML part: no DOCTYPE/entities, bounded depth; no archive nested inside (outside the
    embeddings folder, whose objects we never open)."""
    for info in infos:
        lower = info.filename.lower()
        with zf.open(info) as part:
            head = part.read(4)
        if lower.endswith(".zip") or (head == b"PK\x03\x04" and not lower.startswith("word/embeddings/")):
            raise ExtractionError(422, "The Word document contains a nested archive.")
        if lower.endswith((".xml", ".rels")):
            _check_xml_part(zf, info, limits)


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
            for event, element in etree.iterparse(
                part, events=("start", "end"), resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False
            ):
                if event == "start":
                    depth += 1
                    if depth > limits.max_nesting_depth:
                        raise ExtractionError(422, "The Word document's XML is nested too deeply.")
                else:
                    depth -= 1
                    element.clear()
    except etree.XMLSyntaxError as exc:
        raise ExtractionError(422, f"The Word document's XML is malformed ({short_reason(exc)}).") from None
