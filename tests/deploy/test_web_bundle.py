"""tools/web_bundle.py: what the first page of a built web app downloads, read from dist."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tools import web_bundle


def built(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(
        "<!doctype html><html><head>"
        '<link rel="icon" href="/favicon.svg" type="image/svg+xml">'
        '<script type="module" crossorigin src="/assets/index-a1.js"></script>'
        '<link rel="modulepreload" crossorigin href="/assets/react-b2.js">'
        '<link rel="stylesheet" crossorigin href="/assets/index-c3.css">'
        '<link rel="preconnect" href="https://api.example.com">'
        "</head><body><div id=root></div></body></html>"
    )
    (dist / "favicon.svg").write_text("<svg/>")
    (dist / "assets" / "index-a1.js").write_text(
        'import{r as e}from"./react-b2.js";import"./shared-d4.js";const l=()=>import("./lazy-e5.js");' + "x" * 400
    )
    (dist / "assets" / "react-b2.js").write_text("export const r=1;" + "y" * 900)
    (dist / "assets" / "shared-d4.js").write_text("export const s=2;")
    (dist / "assets" / "lazy-e5.js").write_text("export default 3;" + "z" * 5000)
    (dist / "assets" / "index-c3.css").write_text("body{margin:0}")
    return dist


def test_first_page_is_index_and_what_it_loads_before_any_lazy_chunk(tmp_path: Path) -> None:
    dist = built(tmp_path)
    bundle = web_bundle.measure(dist)
    kinds = {a.path: a.kind for a in bundle.first_page}
    assert kinds == {
        "index.html": "html",
        "favicon.svg": "icon",
        "assets/index-a1.js": "script",
        "assets/react-b2.js": "preload",
        "assets/index-c3.css": "style",
        "assets/shared-d4.js": "preload",  # a static import of the entry, though not preloaded
    }
    # The lazy chunk (a dynamic import) is in dist but not in the first page.
    assert bundle.dist_files == 7
    assert bundle.dist_bytes == sum(p.stat().st_size for p in dist.rglob("*") if p.is_file())
    js = ["assets/index-a1.js", "assets/react-b2.js", "assets/shared-d4.js"]
    assert bundle.initial_js_bytes == sum((dist / p).stat().st_size for p in js)
    assert bundle.initial_js_gzip == sum(len(gzip.compress((dist / p).read_bytes(), 6, mtime=0)) for p in js)
    assert bundle.first_page_gzip > bundle.initial_js_gzip
    assert "initial JS" in bundle.summary()


def test_a_missing_file_named_by_index_fails(tmp_path: Path) -> None:
    dist = built(tmp_path)
    (dist / "assets" / "react-b2.js").unlink()
    with pytest.raises(FileNotFoundError, match=r"react-b2\.js"):
        web_bundle.measure(dist)
