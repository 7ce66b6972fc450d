"""A service's log file, read the way a person would: wait for a line rather than sleep and hope."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import httpx
import pytest

from tools.stack import Stack


def read(path: Path, since: int = 0) -> str:
    """The log from character ``since`` on ("" while the file does not exist)."""
    return path.read_text(errors="replace")[since:] if path.exists() else ""


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(read(path).splitlines()[-lines:])


def _missing(path: Path, text: str, timeout: float) -> str:
    return f"{text!r} did not appear in {path.name} within {timeout:g} s; its last lines:\n{tail(path)}"


async def wait_for_log(path: Path, text: str, *, since: int = 0, timeout: float = 10.0) -> str:
    """Poll the log until ``text`` appears after character ``since``; returns the log from there.
    Fails the test, with the log's tail, when it does not appear within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while text not in (written := read(path, since)):
        if time.monotonic() > deadline:
            pytest.fail(_missing(path, text, timeout))
        await asyncio.sleep(0.05)
    return written


def wait_for_log_sync(path: Path, text: str, *, since: int = 0, timeout: float = 10.0) -> str:
    """``wait_for_log`` for code without an event loop."""
    deadline = time.monotonic() + timeout
    while text not in (written := read(path, since)):
        if time.monotonic() > deadline:
            pytest.fail(_missing(path, text, timeout))
        time.sleep(0.05)
    return written


async def reached(stack: Stack, request_id: str, names: tuple[str, ...]) -> list[str]:
    """Which of the named services of ``stack`` logged a request of ``request_id``. Each is sent a
    later request of its own id first and its log read once that one is there: a service logs its
    requests in the order it finishes them, so an earlier one would be there too."""
    seen = []
    async with httpx.AsyncClient(timeout=10) as client:
        for name in names:
            marker = f"later-{secrets.token_hex(6)}"
            resp = await client.get(stack.url(name) + "/", headers={"X-Request-ID": marker})
            assert resp.status_code == 200, (name, resp.status_code)
            path = stack.workdir / f"{name}.log"
            await wait_for_log(path, marker)
            if request_id in read(path):
                seen.append(name)
    return seen
