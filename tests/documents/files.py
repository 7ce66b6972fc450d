"""Hostile files, built byte by byte in the tests."""

from __future__ import annotations

import io
import struct
import zipfile

from tests.documents.conftest import make_docx, make_pdf, rezip

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r>
<w:t>&lol4;</w:t></w:r></w:p></w:body></w:document>"""


def _replace(base: bytes, name: str, data: bytes, *extra: tuple[str, bytes]) -> bytes:
    def edit(src: zipfile.ZipFile, dst: zipfile.ZipFile) -> None:
        for info in src.infolist():
            dst.writestr(info.filename, data if info.filename == name else src.read(info.filename))
        for extra_name, extra_data in extra:
            dst.writestr(extra_name, extra_data)

    return rezip(base, edit)


def docx_base() -> bytes:
    return make_docx(["A perfectly ordinary paragraph."])


def docx_bomb(megabytes: int = 64) -> bytes:
    """A DOCX whose document.xml inflates from ~64 KB to ``megabytes`` MB (ratio ~1000)."""
    base = docx_base()
    src = zipfile.ZipFile(io.BytesIO(base))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename == "word/document.xml":
                with dst.open("word/document.xml", "w") as fh:
                    block = b" " * (1 << 20)
                    for _ in range(megabytes):
                        fh.write(block)
            else:
                dst.writestr(info.filename, src.read(info.filename))
    return out.getvalue()


def docx_overlapping() -> bytes:
    """A quoted-overlap zip bomb's trick: two directory entries whose data overlap in the file."""
    data = bytearray(
        _replace(docx_base(), "", b"", ("word/media/a.bin", b"A" * 4000), ("word/media/b.bin", b"B" * 4000))
    )
    # Point b.bin's central directory entry at a.bin's local header: the two now share bytes.
    offsets = {}
    pos = 0
    while (pos := data.find(b"PK\x01\x02", pos)) >= 0:
        name_len = struct.unpack("<H", data[pos + 28 : pos + 30])[0]
        name = bytes(data[pos + 46 : pos + 46 + name_len]).decode()
        offsets[name] = pos
        pos += 46
    a_offset = struct.unpack("<I", data[offsets["word/media/a.bin"] + 42 : offsets["word/media/a.bin"] + 46])[0]
    b_entry = offsets["word/media/b.bin"]
    data[b_entry + 42 : b_entry + 46] = struct.pack("<I", a_offset)
    return bytes(data)


def docx_many_entries(count: int = 100_000) -> bytes:
    base = docx_base()
    src = zipfile.ZipFile(io.BytesIO(base))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
        for i in range(count):
            dst.writestr(f"customXml/extra{i}.xml", b"")
    return out.getvalue()


def docx_with_entry(name: str, data: bytes = b"x") -> bytes:
    return _replace(docx_base(), "", b"", (name, data))


def docx_nested_zip() -> bytes:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("inner.txt", b"hello")
    return docx_with_entry("word/inner.bin", inner.getvalue())


def docx_symlink() -> bytes:
    base = docx_base()
    src = zipfile.ZipFile(io.BytesIO(base))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
        link = zipfile.ZipInfo("word/link")
        link.create_system = 3
        link.external_attr = 0o120777 << 16
        dst.writestr(link, b"/etc/passwd")
    return out.getvalue()


def docx_billion_laughs() -> bytes:
    return _replace(docx_base(), "word/document.xml", BILLION_LAUGHS)


def docx_deep_xml(depth: int = 5000) -> bytes:
    ns = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    body = b"<w:r>" * depth + b"<w:t>deep</w:t>" + b"</w:r>" * depth
    xml = f'<?xml version="1.0"?><w:document {ns}><w:body><w:p>'.encode() + body + b"</w:p></w:body></w:document>"
    return _replace(docx_base(), "word/document.xml", xml)


def zip_not_docx() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("readme.txt", b"just a zip")
    return out.getvalue()


# ------------------------------------------------------------------------------------------- PDF


def pdf_flate_bomb(megabytes: int = 200) -> bytes:
    """A one-page PDF whose content stream inflates to ``megabytes`` MB of spaces."""
    import zlib

    comp = zlib.compressobj(9)
    parts = [comp.compress(b" " * (1 << 20)) for _ in range(megabytes)]
    stream = b"".join(parts) + comp.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    return assemble_pdf(objects)


def pdf_circular_prev() -> bytes:
    """A PDF whose trailer's /Prev points back at its own cross-reference table."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
    ]
    return assemble_pdf(objects, prev_self=True)


def pdf_broken_outlines() -> bytes:
    """A PDF with text whose outline (bookmarks) loops back on itself and points nowhere."""
    content = b"BT /F1 12 Tf 72 720 Td (Text beside a broken outline.) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R /Outlines 5 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Outlines /First 6 0 R /Last 6 0 R /Count 1 >>",
        b"<< /Title (loop) /Parent 5 0 R /Next 6 0 R /Prev 6 0 R /First 6 0 R /Dest 99 0 R >>",
    ]
    return assemble_pdf(objects)


def pdf_pages(count: int) -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(count):
        writer.add_blank_page(width=100, height=100)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def pdf_corrupt() -> bytes:
    real = make_pdf(["This PDF will be cut short."])
    return real[: len(real) // 3] + b"\x00garbage" * 50


def assemble_pdf(objects: list[bytes], prev_self: bool = False) -> bytes:
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    trailer = b"<< /Size %d /Root 1 0 R" % (len(objects) + 1)
    if prev_self:
        trailer += b" /Prev %d" % xref
    out += b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 64
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" + b"\x00" * 200
HTML = b"<!DOCTYPE html><html><head><title>t</title></head><body><p>Hello from HTML</p></body></html>"

__all__ = ["make_docx", "make_pdf"]
