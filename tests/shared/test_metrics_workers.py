"""/metrics of an instance run with several workers counts what every worker served: the workers
keep their metrics in files of the instance's own directory (prometheus_client's multiprocess
mode), which any worker's /metrics sums."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import httpx
from prometheus_client import multiprocess
from prometheus_client.parser import text_string_to_metric_families

from tools.stack import Stack

BATCH = 20


def _served_root(metric_families: list) -> float:
    return sum(
        sample.value
        for family in metric_families
        if family.name == "http_requests"
        for sample in family.samples
        if sample.name == "http_requests_total"
        and sample.labels.get("route") == "/"
        and sample.labels.get("method") == "GET"
    )


def _per_worker(instance: Path) -> dict[str, float]:
    """GET / requests each worker has counted, from its own file."""
    return {
        path.name: _served_root(list(multiprocess.MultiProcessCollector.merge([str(path)], accumulate=True)))
        for path in instance.glob("counter_*.db")
    }


async def test_two_workers_are_counted_in_one_scrape() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="ultrai-metrics-"))
    base = workdir / "metrics"
    # What an earlier run of an instance left behind (its supervisor is long gone).
    stale = base / "999999999-1"
    stale.mkdir(parents=True)
    (stale / "counter_1.db").write_bytes(b"\0" * 8)
    stack = Stack(
        workdir,
        {"WEB_CONCURRENCY": "2", "PROMETHEUS_MULTIPROC_DIR": str(base), "LOG_LEVEL": "WARNING"},
        names=("gateway",),
    )
    stack.env.update({"AUTH_URL": "http://127.0.0.1:9", "DOCUMENTS_URL": "http://127.0.0.1:9"})
    stack.env["LLM_URL"] = "http://127.0.0.1:9"
    try:
        await asyncio.to_thread(stack.start_all)
        url = stack.url("gateway")
        # A new connection per request, so the two workers' accept() calls share them out.
        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            sent = 0
            for _ in range(25):
                answers = await asyncio.gather(*(client.get("/") for _ in range(BATCH)))
                assert all(r.status_code == 200 for r in answers)
                sent += BATCH
                instances = [d for d in base.iterdir() if d.is_dir()]
                if len(instances) == 1 and sum(1 for n in _per_worker(instances[0]).values() if n) >= 2:
                    break
            assert not stale.exists(), "the stale instance's directory was not removed at start"
            assert len(instances) == 1, instances
            counts = _per_worker(instances[0])
            assert sum(1 for n in counts.values() if n) >= 2, f"one worker served everything: {counts}"
            # Whichever worker answers the scrape, it reports both workers' requests.
            for _ in range(10):
                scrape = await client.get("/metrics")
                assert scrape.status_code == 200
                assert _served_root(list(text_string_to_metric_families(scrape.text))) == sent
    finally:
        stack.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
