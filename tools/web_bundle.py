"""What a browser downloads to show the web app's first page, read from a built ``web/dist``.

The first page is index.html plus what it names: the entry script(s), the module preloads, the
style sheets and the icon. Sizes are given as stored and gzip-compressed (level 6, what servers use
by default), each file compressed on its own as it is sent. ``make deploy-check`` and
bench/bench_web.py print these figures.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path


@dataclass
class Asset:
    path: str
    kind: str  # "script", "preload", "style", "icon", "html"
    size: int
    gzip: int


@dataclass
class Bundle:
    dist_bytes: int
    dist_files: int
    first_page: list[Asset]

    @property
    def initial_js(self) -> list[Asset]:
        return [a for a in self.first_page if a.kind in ("script", "preload")]

    @property
    def initial_js_bytes(self) -> int:
        return sum(a.size for a in self.initial_js)

    @property
    def initial_js_gzip(self) -> int:
        return sum(a.gzip for a in self.initial_js)

    @property
    def first_page_gzip(self) -> int:
        return sum(a.gzip for a in self.first_page)

    def summary(self) -> str:
        kb = 1024
        return (
            f"dist {self.dist_bytes / kb:.1f} kB in {self.dist_files} files; initial JS "
            f"{self.initial_js_bytes / kb:.1f} kB ({self.initial_js_gzip / kb:.1f} kB gzip) in "
            f"{len(self.initial_js)} file(s); first page {self.first_page_gzip / kb:.1f} kB gzip "
            f"({len(self.first_page)} files: " + ", ".join(a.path for a in self.first_page) + ")"
        )


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        rel = set(a.get("rel", "").lower().split())
        if tag == "script" and a.get("src"):
            self.refs.append(("script", a["src"]))
        elif tag == "link" and a.get("href"):
            if "modulepreload" in rel:
                self.refs.append(("preload", a["href"]))
            elif "stylesheet" in rel:
                self.refs.append(("style", a["href"]))
            elif "icon" in rel:
                self.refs.append(("icon", a["href"]))


def gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=6, mtime=0))


def local_path(dist: Path, ref: str) -> Path | None:
    """The file in dist a reference of index.html names (None for another origin's)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:|^//", ref, re.IGNORECASE):
        return None
    return dist / ref.split("?")[0].split("#")[0].lstrip("/")


# A static import in a built module (import{a}from"./x.js", import"./y.js"); dynamic import("...") is
# loaded later, so not part of the first page.
_STATIC_IMPORT = re.compile(r"""(?:^|[;}\s])import\s*(?:[\w*{}\s,$]+?from\s*)?["'](\.{1,2}/[^"']+\.js)["']""")


def static_imports(path: Path) -> list[Path]:
    return [(path.parent / m).resolve() for m in _STATIC_IMPORT.findall(path.read_text(encoding="utf-8"))]


def first_page(dist: Path) -> list[Asset]:
    index = dist / "index.html"
    html = index.read_bytes()
    assets = [Asset("index.html", "html", len(html), gzip_size(html))]
    parser = _Refs()
    parser.feed(html.decode("utf-8"))
    seen: set[Path] = set()
    queue = [(kind, path.resolve()) for kind, ref in parser.refs if (path := local_path(dist, ref)) is not None]
    while queue:
        kind, path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        if not path.is_file():
            raise FileNotFoundError(f"the first page needs {path}, which is not in {dist}")
        data = path.read_bytes()
        assets.append(Asset(str(path.relative_to(dist.resolve())), kind, len(data), gzip_size(data)))
        if kind in ("script", "preload"):
            queue.extend(("preload", imported) for imported in static_imports(path))
    return assets


def measure(dist: Path) -> Bundle:
    files = [p for p in dist.rglob("*") if p.is_file()]
    return Bundle(sum(p.stat().st_size for p in files), len(files), first_page(dist))
