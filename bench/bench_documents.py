"""Documents: extraction throughput, memory while a 25 MB file is uploaded, time to the first analysis event.

1. Extraction MB/s (input bytes per second) for a real PDF and a real DOCX built here: the parser
   alone in this process, and the whole worker path (a child process per file, with its limits).
2. The documents service's resident memory while a 25 MB file is uploaded through the gateway
   (auth + documents + llm + gateway as real processes): the service process' growth over its
   idle size (our bar: under 30 MB), and the extraction worker's peak, for a 25 MB PDF (a few pages
   of text and a large embedded binary stream, like a scan) and 25 MB of plain text.
3. Time from the start of an upload to the first analysis event (SSE through the gateway), and to
   the completed event, with the llm service on the fake OpenAI-compatible provider.

Usage: python bench/bench_documents.py   (about a minute)
"""

from __future__ import annotations

import asyncio
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "services" / "documents")]

from tests.documents.conftest import make_docx, make_pdf  # noqa: E402
from tests.documents.files import assemble_pdf  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI  # noqa: E402
from tests.support.users import bearer, new_access_token  # noqa: E402
from tools.bench_results import Results  # noqa: E402
from tools.stack import Stack  # noqa: E402
from ultrai_documents.extraction.base import Limits  # noqa: E402
from ultrai_documents.extraction.extract import extract_file  # noqa: E402
from ultrai_documents.extraction.sandbox import Extractor  # noqa: E402

MB = 1024 * 1024
LOREM = (
    "The committee reviewed the quarterly figures and agreed that the budget for the next phase "
    "should stay within the limits set in the spring. Several members asked for more detail. "
)


def median(values: list[float]) -> float:
    return statistics.median(values)


# ------------------------------------------------------------------------------- 1. extraction


WORDS = [*LOREM.replace(".", "").lower().split(), "revenue", "forecast", "members", "minutes", "vote", "review"]


def prose(rng: random.Random, words: int) -> str:
    """Varied text (real documents do not repeat one sentence; a repeated one compresses like a bomb)."""
    return " ".join(rng.choice(WORDS) + rng.choice(["", "", "", ",", "."]) for _ in range(words))


def big_pdf(pages: int) -> bytes:
    rng = random.Random(1)
    return make_pdf(["\n".join(prose(rng, 14) for _ in range(40)) for _ in range(pages)])


def big_docx(paragraphs: int) -> bytes:
    rng = random.Random(2)
    return make_docx([prose(rng, 60) for _ in range(paragraphs)])


async def extraction(tmp: Path, results: Results) -> None:
    print("1. extraction throughput (input MB per second; median of 3)")
    samples = {"PDF": big_pdf(300), "DOCX": big_docx(3000)}
    extractor = Extractor(Limits(), memory_mb=768, cpu_seconds=60, timeout=120, concurrency=1)
    for label, data in samples.items():
        path = tmp / f"bench.{label.lower()}"
        path.write_bytes(data)
        size_mb = len(data) / MB
        direct, worker = [], []
        chars = 0
        for _ in range(3):
            started = time.perf_counter()
            result = extract_file(str(path), None, Limits())
            direct.append(time.perf_counter() - started)
            chars = len(result.text)
            started = time.perf_counter()
            await extractor.extract(path, None)
            worker.append(time.perf_counter() - started)
            path.with_suffix(".txt").unlink(missing_ok=True)
        print(
            f"   {label:<5} {size_mb:6.2f} MB, {chars / 1e6:5.2f} M chars: parser {size_mb / median(direct):6.2f} MB/s "
            f"({median(direct) * 1000:6.0f} ms); worker process {size_mb / median(worker):6.2f} MB/s "
            f"({median(worker) * 1000:6.0f} ms, incl. start-up and chunking)"
        )
        results.add(f"{label} parser", size_mb / median(direct), "MB/s", better="higher")
        results.add(f"{label} worker process", size_mb / median(worker), "MB/s", better="higher")


# -------------------------------------------------------------------------- 2. memory on upload


def scan_like_pdf(size: int) -> bytes:
    """A PDF of about ``size`` bytes: a page of text plus a large incompressible embedded stream."""
    content = b"BT /F1 12 Tf 72 720 Td (" + LOREM[:90].encode() + b") Tj ET"
    filler = secrets.token_bytes(size - 1200)
    return assemble_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R /Filler 5 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
            b"<< /Length %d >>\nstream\n" % len(filler) + filler + b"\nendstream",
        ]
    )


class Sampler:
    """Samples the service process' RSS and its children's every few milliseconds."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak_main = 0
        self.peak_children = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_main = max(self.peak_main, self.proc.memory_info().rss)
                kids = 0
                for child in self.proc.children(recursive=True):
                    try:
                        kids += child.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak_children = max(self.peak_children, kids)
            except psutil.Error:
                pass
            time.sleep(0.005)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def upload_memory(stack: Stack, client: httpx.AsyncClient, headers: dict[str, str], results: Results) -> None:
    print("2. documents service memory while a 25 MB file is uploaded through the gateway")
    pid = stack.procs["documents"].proc.pid
    size = 25 * MB - 70 * 1024  # under the 25 MB file limit with the multipart framing
    # Warm up (first upload imports and fills pools), so the figure is the upload's own growth.
    await client.post("/api/v1/documents", headers=headers, files={"file": ("w.txt", b"warm up " * 100)})
    for label, data in (
        ("PDF (scan-like)", scan_like_pdf(size)),
        ("plain text", (LOREM * (size // len(LOREM) + 1))[:size].encode()),
    ):
        baseline = psutil.Process(pid).memory_info().rss
        with Sampler(pid) as sampler:
            started = time.perf_counter()

            async def body(data: bytes = data):
                for i in range(0, len(data), 256 * 1024):
                    yield data[i : i + 256 * 1024]

            # A streamed request body: the client never holds a second copy, the server sees chunks.
            boundary = secrets.token_hex(8)
            head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big"\r\n\r\n'.encode()
            tail = f"\r\n--{boundary}--\r\n".encode()

            async def multipart(head: bytes = head, tail: bytes = tail):
                yield head
                async for piece in body():
                    yield piece
                yield tail

            resp = await client.post(
                "/api/v1/documents",
                headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                content=multipart(),
            )
            elapsed = time.perf_counter() - started
        assert resp.status_code == 201, resp.text
        growth = (sampler.peak_main - baseline) / MB
        print(
            f"   {label:<16} {len(data) / MB:5.1f} MB in {elapsed:5.2f} s: service RSS {baseline / MB:6.1f} MB idle, "
            f"peak +{growth:5.1f} MB; extraction worker peak {sampler.peak_children / MB:6.1f} MB"
        )
        results.add(f"{label} upload", elapsed, "s", better="lower")
        results.add(f"{label} service RSS idle", baseline / MB, "MB", better="lower")
        results.add(f"{label} service RSS peak +", growth, "MB", better="lower")
        results.add(f"{label} extraction worker peak", sampler.peak_children / MB, "MB", better="lower")
        await client.delete(f"/api/v1/documents/{resp.json()['id']}", headers=headers)


# -------------------------------------------------------------------- 3. first analysis event


async def first_event(
    stack: Stack, client: httpx.AsyncClient, headers: dict[str, str], results: Results, runs: int = 10
) -> None:
    print(f"3. upload -> first analysis event (SSE via the gateway, fake provider); median of {runs}")
    to_first, to_model, to_done = [], [], []
    for i in range(runs):
        pdf = make_pdf([f"Report {i} {secrets.token_hex(4)}", "Revenue grew by ten percent."])
        started = time.perf_counter()
        r = await client.post("/api/v1/documents", headers=headers, files={"file": ("r.pdf", pdf)})
        r.raise_for_status()
        uploaded = time.perf_counter() - started
        body = {"kind": "summary", "models": ["bench-a", "bench-b"], "synthesis_model": "bench-a"}
        a = await client.post(f"/api/v1/documents/{r.json()['id']}/analyses", headers=headers, json=body)
        a.raise_for_status()
        first = model = None
        async with client.stream("GET", a.headers["location"] + "/events", headers=headers) as resp:
            async for line in resp.aiter_lines():
                now = time.perf_counter() - started
                if line.startswith("event: "):
                    first = first if first is not None else now
                    if line == "event: model" and model is None:
                        model = now
                    if line in ("event: completed", "event: failed"):
                        to_done.append(now)
                        assert line == "event: completed"
        to_first.append(first)
        to_model.append(model)
        if i == 0:
            print(f"   (upload of a {len(pdf)} B PDF itself: {uploaded * 1000:.0f} ms)")
            results.add("upload of the PDF itself", uploaded * 1000, "ms", better="lower")
    print(
        f"   first event {median(to_first) * 1000:6.0f} ms; first model answer {median(to_model) * 1000:6.0f} ms; "
        f"completed {median(to_done) * 1000:6.0f} ms (from the start of the upload)"
    )
    results.add("first event", median(to_first) * 1000, "ms", better="lower")
    results.add("first model answer", median(to_model) * 1000, "ms", better="lower")
    results.add("completed", median(to_done) * 1000, "ms", better="lower")


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-documents-"))
    results = Results("documents")
    try:
        await extraction(tmp, results)
        with FakeOpenAI() as fake:
            models = fake.models_file(tmp / "models.json", ["bench-a", "bench-b"])
            stack = Stack(
                tmp / "stack",
                {"LLM_MODELS_FILE": str(models), "LOG_LEVEL": "WARNING", "SSE_POLL_SECONDS": "0.05"},
            )
            await asyncio.to_thread(stack.start_all)
            try:
                async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=120) as client:
                    headers = bearer(await new_access_token(stack.url("gateway"), "bench"))
                    await upload_memory(stack, client, headers, results)
                    await first_event(stack, client, headers, results)
            finally:
                stack.stop_all()
        results.save()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
