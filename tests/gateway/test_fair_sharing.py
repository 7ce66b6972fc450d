"""One account cannot take the gateway from the others: its long-lived requests (uploads, event
streams) are capped per account across gateway instances, beyond the cap it gets 429 with
Retry-After, and another account's reads are served meanwhile."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.users import bearer, register_and_login
from ultrai_gateway.deps import is_long_lived

pytestmark = pytest.mark.e2e

CAP = 10
BOUNDARY = "ultrai-slow-upload"


def test_uploads_and_event_streams_are_the_long_lived_requests() -> None:
    assert is_long_lived("POST", "/api/v1/documents")
    assert is_long_lived("POST", "/api/v1/documents/")
    assert is_long_lived("GET", "/api/v1/documents/d1/analyses/a1/events")
    assert not is_long_lived("GET", "/api/v1/documents")
    assert not is_long_lived("POST", "/api/v1/documents/d1/analyses")
    assert not is_long_lived("POST", "/v1/chat/completions")


async def _slow_multipart(seconds: float, chunks: int) -> AsyncIterator[bytes]:
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="slow.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    for i in range(chunks):
        await asyncio.sleep(seconds / chunks)
        yield f"line {i} of a slow upload\n".encode()
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


async def test_one_account_is_capped_and_another_is_served(make_stack) -> None:
    st = await make_stack(
        names=("auth", "documents", "gateway"),
        env={"MAX_STREAMS_PER_USER": str(CAP), "BODY_MIN_BYTES_PER_SECOND": "0"},
    )
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=50)
    async with httpx.AsyncClient(base_url=st.url("gateway"), timeout=60, limits=limits) as client:
        _, heavy = await register_and_login(client)
        _, other = await register_and_login(client)

        unexpected: list[str] = []  # any other answer, with its problem detail, for the failure message

        async def upload() -> int:
            resp = await client.post(
                "/api/v1/documents",
                headers={**bearer(heavy["access_token"]), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                content=_slow_multipart(4.0, 16),
            )
            if resp.status_code == 429:
                assert resp.headers["retry-after"] == "5"
                assert resp.headers["content-type"].startswith("application/problem+json")
            elif resp.status_code not in (200, 201):
                unexpected.append(f"{resp.status_code}: {resp.text[:300]}")
            return resp.status_code

        async def reads(until: float) -> list[float]:
            took: list[float] = []
            while time.monotonic() < until:
                started = time.perf_counter()
                resp = await client.get("/api/v1/documents", headers=bearer(other["access_token"]))
                took.append(time.perf_counter() - started)
                assert resp.status_code == 200, resp.text
                await asyncio.sleep(0.02)
            return took

        uploads = [asyncio.create_task(upload()) for _ in range(200)]
        await asyncio.sleep(0.5)
        took = await reads(time.monotonic() + 3.0)
        codes = await asyncio.gather(*uploads)

        assert not unexpected, unexpected
        assert codes.count(201) + codes.count(200) == CAP, sorted(set(codes))
        assert codes.count(429) == 200 - CAP
        # the slots come back when the uploads end: the account can upload again
        again = await client.post(
            "/api/v1/documents",
            headers=bearer(heavy["access_token"]),
            files={"file": ("a.txt", b"after", "text/plain")},
        )
        assert again.status_code in (200, 201), again.text
        took.sort()
        p99 = took[min(len(took) - 1, int(len(took) * 0.99))]
        print(
            f"\n200 slow uploads from one account (cap {CAP}): {codes.count(429)} refused with 429; another "
            f"account's {len(took)} reads meanwhile: p50 {statistics.median(took) * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms"
        )
