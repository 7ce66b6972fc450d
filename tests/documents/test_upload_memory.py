"""Memory comes back after a burst of uploads: 100 concurrent 1 MB uploads through the gateway, no
5xx, and the documents service's resident memory settles back within 15 MB of its baseline
(shared.memory: a fixed mmap threshold, two allocator arenas, free heap returned periodically;
ultrai_documents.upload: at most FLUSH_BYTES of a file held at a time)."""

from __future__ import annotations

import asyncio
import secrets

import httpx
import psutil
import pytest

from tests.conftest import TEST_DATABASE_URL
from tests.support.users import bearer, register_and_login
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

MB = 1_048_576


def _file(label: str) -> bytes:
    line = (secrets.token_hex(64) + "\n").encode()
    return line * (MB // len(line))


async def test_rss_returns_within_15_mb_after_100_concurrent_1mb_uploads(make_stack) -> None:
    if not TEST_DATABASE_URL:
        pytest.skip("measured on PostgreSQL, as deployed (SQLite keeps a page cache per connection)")
    st = await make_stack(
        names=("auth", "documents", "gateway"), env={"MAX_STREAMS_PER_USER": "1000", "MEMORY_TRIM_SECONDS": "5"}
    )
    documents = psutil.Process(st.procs["documents"].proc.pid)
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=st.url("gateway"), timeout=120, limits=limits) as client:
        _, tokens = await register_and_login(client)
        auth = bearer(tokens["access_token"])

        async def warm_up() -> int:  # the first uploads load the parsers and fill the pools
            resp = await client.post("/api/v1/documents", headers=auth, files={"file": ("w.txt", _file("w"))})
            return resp.status_code

        for _ in range(3):  # (the first may come before documents has auth's keys: 503, retried)
            await eventually(warm_up, lambda code: code == 201, what="a warm-up upload", timeout=30)
        await asyncio.sleep(6)
        baseline = documents.memory_info().rss / MB

        async def upload(i: int) -> int:
            resp = await client.post("/api/v1/documents", headers=auth, files={"file": (f"f{i}.txt", _file("f"))})
            return resp.status_code

        codes = await asyncio.gather(*(upload(i) for i in range(100)))
        peak = documents.memory_info().rss / MB
        assert codes == [201] * 100, {code: codes.count(code) for code in set(codes)}

        async def rss() -> float:
            return documents.memory_info().rss / MB

        settled = await eventually(rss, lambda mb: mb <= baseline + 15, what="documents RSS back", timeout=60)
        print(
            f"\ndocuments RSS: baseline {baseline:.1f} MB, after 100 x 1 MB uploads {peak:.1f}, settled {settled:.1f}"
        )
