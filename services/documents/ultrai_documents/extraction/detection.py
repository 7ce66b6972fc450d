"""Type detection: the type comes from the content only (magic bytes, then structure).

The file name's extension is used for one thing: a name that claims another type than the content
is refused as mislabelled.
"""

from __future__ import annotations

import io
from pathlib import PurePosixPath

from ultrai_documents.extraction.base import unsupported

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
    """'pdf', 'zip' (a DOCX candidate), or None for 'maybe text'; raises 415 for known other formats."""
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


def file_tail(path: str) -> bytes:
    """The last 64 KiB + 22 bytes: where a zip's end-of-central-directory record must be."""
    with open(path, "rb") as fh:
        fh.seek(0, io.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 65_557))
        return fh.read()


def zip_tail_signature(path: str) -> bool:
    """Whether the file ends in a zip end-of-central-directory record (a PDF/zip polyglot)."""
    return b"PK\x05\x06" in file_tail(path)
