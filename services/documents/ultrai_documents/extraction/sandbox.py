"""Extraction in a child process with memory, CPU and wall-clock limits, one process per job.

A process per job (rather than a pool) gives each file fresh limits: RLIMIT_CPU counts a process's
whole life, and a child that a hostile file pushed to its memory limit is gone afterwards. The
child gets no environment beyond PATH and its import path (no secrets), reads its job from stdin,
writes the text to a file next to the upload and answers one JSON line on stdout. The parent
enforces the wall clock and kills the child's whole process group past it.

Run as ``python -m ultrai_documents.extraction.sandbox`` (the parent does this; see ``Extractor``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import KW_ONLY, InitVar, asdict, dataclass, field
from pathlib import Path
from typing import Any

from ultrai_documents.extraction.base import ExtractionError, Limits

MODULE = "ultrai_documents.extraction.sandbox"
# The folder that holds the ultrai_documents package: the child's whole import path.
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


@dataclass
class ExtractionResult:
    kind: str
    media_type: str
    page_count: int | None
    encoding: str | None
    chars: int
    text_path: str
    chunks: list[tuple[int, int, int]]


# ------------------------------------------------------------------------------ the child's side


def _apply_limits(memory_mb: int, cpu_seconds: int, max_output_bytes: int) -> None:
    import resource

    memory = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 2))
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_output_bytes, max_output_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    from ultrai_documents.extraction.chunking import chunk_text
    from ultrai_documents.extraction.extract import extract_file

    limits = Limits(**job["limits"])
    try:
        result = extract_file(job["path"], job.get("name"), limits)
    except ExtractionError as exc:
        return {"ok": False, "status": exc.status, "reason": exc.reason}
    except MemoryError:
        return {"ok": False, "status": 422, "reason": "The file needs more memory to read than the limit allows."}
    except RecursionError:
        return {"ok": False, "status": 422, "reason": "The file is nested too deeply to read."}
    chunks = chunk_text(result.text, limits.chunk_tokens, limits.chunk_overlap_tokens)
    with open(job["out"], "w", encoding="utf-8", newline="") as fh:
        fh.write(result.text)
    return {
        "ok": True,
        "kind": result.kind,
        "media_type": result.media_type,
        "page_count": result.page_count,
        "encoding": result.encoding,
        "chars": len(result.text),
        "text_path": job["out"],
        "chunks": [(c.start, c.end, c.tokens) for c in chunks],
    }


def main() -> None:
    job = json.loads(sys.stdin.buffer.read())
    _apply_limits(job["memory_mb"], job["cpu_seconds"], job["max_output_bytes"])
    answer = run_job(job)
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()


# ----------------------------------------------------------------------------- the parent's side


@dataclass(eq=False)
class Extractor:
    """The parent's side: at most ``concurrency`` children at once, each under the limits."""

    limits: Limits
    _: KW_ONLY
    memory_mb: int
    cpu_seconds: int
    timeout: float
    concurrency: InitVar[int]
    _slots: asyncio.Semaphore = field(init=False, repr=False)

    def __post_init__(self, concurrency: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)

    async def extract(self, path: Path, name: str | None) -> ExtractionResult:
        out = path.with_suffix(".txt")
        job = {
            "path": str(path),
            "name": name,
            "out": str(out),
            "limits": asdict(self.limits),
            "memory_mb": self.memory_mb,
            "cpu_seconds": self.cpu_seconds,
            "max_output_bytes": self.limits.max_text_chars * 4 + 1024,
        }
        async with self._slots:
            try:
                returncode, stdout = await self._run_child(json.dumps(job).encode())
            except (ExtractionError, asyncio.CancelledError):
                out.unlink(missing_ok=True)
                raise
        if returncode != 0:
            out.unlink(missing_ok=True)
            if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
                raise ExtractionError(422, "Reading the file needed more processing time than the limit allows.")
            raise ExtractionError(
                422, "The file could not be read within the memory and processing limits (it may be hostile)."
            )
        try:
            answer = json.loads(stdout)
        except ValueError:
            out.unlink(missing_ok=True)
            raise ExtractionError(422, "The file could not be read.") from None
        if not answer.get("ok"):
            raise ExtractionError(int(answer["status"]), str(answer["reason"]))
        return ExtractionResult(
            kind=answer["kind"],
            media_type=answer["media_type"],
            page_count=answer["page_count"],
            encoding=answer["encoding"],
            chars=answer["chars"],
            text_path=answer["text_path"],
            chunks=[(int(start), int(end), int(tokens)) for start, end, tokens in answer["chunks"]],
        )

    async def _run_child(self, job: bytes) -> tuple[int | None, bytes]:
        """Run one child on ``job``; its exit status and what it wrote on stdout. Past the wall
        clock (or when the caller is cancelled) its process group is killed."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": PACKAGE_PARENT, "LC_ALL": "C.UTF-8"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        try:
            stdout, _stderr = await asyncio.wait_for(proc.communicate(job), self.timeout)
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            raise ExtractionError(
                422, f"Reading the file took longer than the limit of {self.timeout:g} seconds."
            ) from None
        except asyncio.CancelledError:
            _kill_group(proc.pid)
            raise
        return proc.returncode, stdout


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    main()
