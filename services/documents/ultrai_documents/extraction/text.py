"""The text family: plain text, Markdown, HTML, CSV and JSON, in any common encoding.

The bytes are decoded (BOM, UTF-8, then the most likely code page), classified by their structure,
and HTML is reduced to its text; JSON and HTML nesting is bounded before anything recurses.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from html.parser import HTMLParser

from ultrai_documents.extraction.base import Extracted, ExtractionError, Limits, unsupported

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

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
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
