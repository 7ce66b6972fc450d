"""Waiting for a condition with a deadline that fails the test, instead of a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    what: str,
    timeout: float = 10.0,
    interval: float = 0.1,
) -> T:
    """Call ``probe`` until ``done(result)``; returns that result. Fails the test naming ``what``
    (and the last result) when it does not happen within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s (last: {result!r})")
        await asyncio.sleep(interval)
