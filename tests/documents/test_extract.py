"""Type detection and extraction from real files, and refusal of hostile ones before any parser runs
plus the sandbox process' limits."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

from tests.documents import files as F
from tests.documents.conftest import make_docx, make_pdf
from ultrai_documents.extraction.base import ExtractionError, Limits
from ultrai_documents.extraction.chunking import chunk_text, estimate_tokens
from ultrai_documents.extraction.docx import check_docx_zip
from ultrai_documents.extraction.extract import extract_file
from ultrai_documents.extraction.sandbox import Extractor


def run(tmp_dir: Path, data: bytes, name: str | None = None, **limits):
    path = tmp_dir / "input.bin"
    path.write_bytes(data)
    return extract_file(str(path), name, Limits(**limits))


def refused(tmp_dir: Path, data: bytes, name: str | None = None, **limits) -> ExtractionError:
    with pytest.raises(ExtractionError) as info:
        run(tmp_dir, data, name, **limits)
    return info.value


# ---------------------------------------------------------------------------- each format, real files


def test_pdf_text_and_pages(tmp_dir: Path) -> None:
    result = run(tmp_dir, make_pdf(["First page says hello.", "Second page says goodbye."]), "report.pdf")
    assert result.kind == "pdf"
    assert result.page_count == 2
    assert "First page says hello." in result.text
    assert "Second page says goodbye." in result.text


def test_docx_paragraphs_and_tables_in_order(tmp_dir: Path) -> None:
    data = make_docx(["Opening paragraph.", "Closing paragraph."], table=[["Name", "Age"], ["Ada", "36"]])
    result = run(tmp_dir, data, "letter.docx")
    assert result.kind == "docx"
    assert result.text.index("Opening paragraph.") < result.text.index("Closing paragraph.")
    assert "Name\tAge" in result.text and "Ada\t36" in result.text


@pytest.mark.parametrize(
    ("data", "kind", "expected"),
    [
        (b"Just a plain note.\nSecond line.", "text", "Just a plain note."),
        (b"# Title\n\nSome **bold** text and [a link](http://example.com).\n\n- one\n- two\n", "markdown", "# Title"),
        (F.HTML, "html", "Hello from HTML"),
        (b"name,age,city\nAda,36,London\nAlan,41,Wilmslow\n", "csv", "Ada,36,London"),
        (b'{"title": "Report", "items": [1, 2, {"k": "v"}]}', "json", '"title": "Report"'),
    ],
)
def test_text_formats(tmp_dir: Path, data: bytes, kind: str, expected: str) -> None:
    result = run(tmp_dir, data)
    assert result.kind == kind
    assert expected in result.text


def test_html_drops_scripts_and_styles(tmp_dir: Path) -> None:
    html = b"<html><head><style>p{}</style><script>alert(1)</script></head><body><p>Visible</p></body></html>"
    result = run(tmp_dir, html)
    assert result.text == "Visible"


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Grüße aus Köln, schöne Straße.", "utf-16"),
        ("Grüße aus Köln, schöne Straße.", "utf-8-sig"),
        ("Привет мир, это тестовый документ на русском языке.", "cp1251"),
        ("日本語のテキストです。これはテストの文書です。", "shift_jis"),
        ("Café crème, déjà vu, naïve façade.", "latin-1"),
    ],
)
def test_text_in_any_common_encoding_becomes_utf8(tmp_dir: Path, text: str, encoding: str) -> None:
    result = run(tmp_dir, text.encode(encoding), "note.txt")
    assert result.text == text
    assert result.encoding


# ------------------------------------------------------------------------------- type from content


@pytest.mark.parametrize(
    ("data", "name", "reason"),
    [
        (b"this is not a PDF at all", "report.pdf", "named .pdf"),
        (F.PNG, "report.pdf", "binary format"),
        (F.EXE, "letter.docx", "binary format"),
        (F.HTML, "letter.docx", "named .docx but its content is HTML"),
        (F.zip_not_docx(), "letter.docx", "not a Word"),
        (make_pdf(["A real PDF"]) + F.zip_not_docx(), "x.pdf", "polyglot"),
        (make_pdf(["A real PDF"]), "notes.txt", "named .txt"),
        (b"\x00\x01\x02\x03" * 100, None, "binary"),
    ],
)
def test_mislabelled_polyglot_and_unknown_types_are_415(tmp_dir: Path, data: bytes, name: str, reason: str) -> None:
    error = refused(tmp_dir, data, name)
    assert error.status == 415
    assert reason in error.reason
    assert "Supported types: PDF, DOCX" in error.reason


def test_name_without_known_extension_is_judged_by_content(tmp_dir: Path) -> None:
    assert run(tmp_dir, make_pdf(["content decides"]), "scan.unknownext").kind == "pdf"
    assert run(tmp_dir, make_pdf(["content decides"]), None).kind == "pdf"


# ---------------------------------------------------------------------- DOCX: refused before parsing


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (F.docx_bomb, "zip bomb"),
        (F.docx_overlapping, "overlap"),
        (F.docx_many_entries, "too many parts"),
        (lambda: F.docx_with_entry("../../evil.txt"), "unsafe path"),
        (lambda: F.docx_with_entry("/etc/evil"), "unsafe path"),
        (lambda: F.docx_with_entry("C:/evil"), "unsafe path"),
        (F.docx_nested_zip, "nested archive"),
        (lambda: F.docx_with_entry("word/other.zip", b"PK\x03\x04rest"), "nested archive"),
        (F.docx_symlink, "symbolic link"),
        (F.docx_billion_laughs, "DOCTYPE"),
        (F.docx_deep_xml, "nested too deeply"),
    ],
    ids=[
        "deflate-bomb",
        "quoted-overlap",
        "100k-entries",
        "dotdot",
        "absolute",
        "drive",
        "nested-zip",
        "zip-entry",
        "symlink",
        "billion-laughs",
        "deep-xml",
    ],
)
def test_hostile_docx_refused_by_the_zip_checks(tmp_dir: Path, build, reason: str) -> None:
    path = tmp_dir / "hostile.docx"
    path.write_bytes(build())
    # The zip checks alone refuse it: python-docx never gets the file.
    with pytest.raises(ExtractionError) as info:
        check_docx_zip(str(path), Limits())
    assert info.value.status == 422
    assert reason in info.value.reason


def test_docx_total_uncompressed_size_capped(tmp_dir: Path) -> None:
    data = F.docx_with_entry("word/media/big.bin", bytes(range(256)) * 8192)  # 2 MB, barely compressible
    error = refused(tmp_dir, data, docx_max_uncompressed_bytes=1024 * 1024)
    assert "too large once uncompressed" in error.reason


def test_docx_huge_xml_part_capped(tmp_dir: Path) -> None:
    big = b'<?xml version="1.0"?><a>' + b"<b>text</b>" * 300_000 + b"</a>"
    error = refused(tmp_dir, F.docx_with_entry("word/huge.xml", big), docx_max_part_bytes=1024 * 1024)
    assert "part that is too large" in error.reason


def test_legit_docx_passes_the_zip_checks(tmp_dir: Path) -> None:
    path = tmp_dir / "ok.docx"
    path.write_bytes(make_docx(["fine"]))
    assert check_docx_zip(str(path), Limits())


# --------------------------------------------------------------------------------------- PDF limits


def test_pdf_flate_bomb_refused(tmp_dir: Path) -> None:
    error = refused(tmp_dir, F.pdf_flate_bomb(200))
    assert error.status == 422
    assert "bomb" in error.reason


def test_pdf_page_count_capped(tmp_dir: Path) -> None:
    error = refused(tmp_dir, F.pdf_pages(10_000))
    assert error.status == 422


def test_pdf_page_count_setting(tmp_dir: Path) -> None:
    error = refused(tmp_dir, make_pdf(["one", "two", "three"]), pdf_max_pages=2)
    assert "3 pages; the limit is 2" in error.reason


def test_pdf_circular_prev_does_not_hang(tmp_dir: Path) -> None:
    error = refused(tmp_dir, F.pdf_circular_prev())
    assert error.status == 422


def test_pdf_broken_outlines_are_never_read(tmp_dir: Path) -> None:
    # Extraction reads pages only; a looping, dangling outline changes nothing.
    assert run(tmp_dir, F.pdf_broken_outlines()).text == "Text beside a broken outline."


def test_corrupt_pdf_422(tmp_dir: Path) -> None:
    error = refused(tmp_dir, F.pdf_corrupt(), "broken.pdf")
    assert error.status == 422
    assert "PDF" in error.reason


# ------------------------------------------------------------------------------------ JSON / HTML


def test_deep_json_refused_without_recursion(tmp_dir: Path) -> None:
    error = refused(tmp_dir, b"[" * 100_000 + b"]" * 100_000)
    assert "nested deeper" in error.reason


def test_deep_html_refused(tmp_dir: Path) -> None:
    error = refused(tmp_dir, b"<html><body>" + b"<div>" * 1000 + b"x" + b"</div>" * 1000 + b"</body></html>")
    assert "nested too deeply" in error.reason


def test_text_length_capped(tmp_dir: Path) -> None:
    error = refused(tmp_dir, b"word " * 1000, max_text_chars=1000)
    assert "longer than the limit" in error.reason


# ------------------------------------------------------------------------------------------- chunks


def test_chunks_are_token_bounded_overlapping_and_cover_the_text() -> None:
    text = "\n\n".join(f"Paragraph {i}. " + "Some sentence about the topic here. " * 12 for i in range(60))
    chunks = chunk_text(text, size=300, overlap=40)
    assert len(chunks) > 5
    assert all(c.tokens <= 300 for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for previous, chunk in itertools.pairwise(chunks):
        assert chunk.start < previous.end  # overlap
        assert chunk.start > previous.start  # progress
        assert estimate_tokens(text[chunk.start : previous.end]) <= 60


def test_chunks_cut_overlong_words() -> None:
    text = "x" * 50_000
    chunks = chunk_text(text, size=100, overlap=0)
    assert all(c.tokens <= 100 for c in chunks)
    assert "".join(text[c.start : c.end] for c in chunks) == text


# ------------------------------------------------------------------------------------ worker limits


def _extractor(**overrides) -> Extractor:
    options = {"memory_mb": 512, "cpu_seconds": 20, "timeout": 60.0, "concurrency": 1}
    options.update(overrides)
    limits = options.pop("limits", Limits())
    return Extractor(limits, **options)


async def test_worker_extracts_and_chunks(tmp_dir: Path) -> None:
    path = tmp_dir / "upload.bin"
    path.write_bytes(make_pdf(["Worker page."]))
    result = await _extractor().extract(path, "w.pdf")
    assert result.kind == "pdf" and result.page_count == 1
    assert Path(result.text_path).read_text() == "Worker page."
    assert result.chunks == [(0, 12, result.chunks[0][2])]


async def test_worker_killed_at_its_memory_limit(tmp_dir: Path) -> None:
    # The decompression cap lifted, so only the worker's address-space limit stands in the way.
    path = tmp_dir / "bomb.pdf"
    path.write_bytes(F.pdf_flate_bomb(300))
    extractor = _extractor(memory_mb=200, limits=Limits(pdf_max_stream_bytes=2**40))
    with pytest.raises(ExtractionError) as info:
        await extractor.extract(path, None)
    assert info.value.status == 422
    assert "limit" in info.value.reason


async def test_worker_stopped_at_its_cpu_limit(tmp_dir: Path) -> None:
    # 20 MB of prose to decode, classify and chunk: far more than one second of CPU.
    path = tmp_dir / "long.txt"
    path.write_bytes(b"Several sentences of ordinary prose, and then some more. " * 350_000)
    with pytest.raises(ExtractionError) as info:
        await _extractor(cpu_seconds=1).extract(path, None)
    assert "processing time" in info.value.reason


async def test_worker_stopped_at_its_wall_clock_limit(tmp_dir: Path) -> None:
    path = tmp_dir / "slow.txt"
    path.write_bytes(b"text " * 100)
    with pytest.raises(ExtractionError) as info:
        # No Python process starts, imports and answers within a millisecond.
        await _extractor(timeout=0.001).extract(path, None)
    assert "longer than the limit" in info.value.reason
    assert not path.with_suffix(".txt").exists()


async def test_worker_gets_no_secrets(tmp_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ultrai_documents.extraction.sandbox as worker

    monkeypatch.setenv("INTERNAL_TOKEN_SECRET", "must-not-leak")
    envs: list[dict[str, str]] = []
    real = worker.asyncio.create_subprocess_exec

    async def spy(*args, **kwargs):
        envs.append(dict(kwargs["env"]))
        return await real(*args, **kwargs)

    monkeypatch.setattr(worker.asyncio, "create_subprocess_exec", spy)
    path = tmp_dir / "a.txt"
    path.write_bytes(b"hello")
    result = await _extractor().extract(path, None)
    # The spy saw the one worker this extraction started (so what follows checks a real env) ...
    assert len(envs) == 1, envs
    (captured,) = envs
    assert Path(result.text_path).read_text() == "hello"
    # ... and that env holds what the child needs to run and nothing more.
    assert "INTERNAL_TOKEN_SECRET" not in captured
    assert "must-not-leak" not in captured.values()
    assert set(captured) <= {"PATH", "PYTHONPATH", "LC_ALL"}
    assert {"PATH", "PYTHONPATH"} <= set(captured)
    assert sys.executable
