"""The analysis queue's metrics, kept in Redis so that the documents web service shows them.

Workers serve no HTTP: each records what it did (a run's wait in the queue, its run time, its
outcome, a redelivery) into one Redis hash shared by every worker, ``<REDIS_KEY_PREFIX>:analysis-metrics``,
by HINCRBY/HINCRBYFLOAT (one round trip per record). Any documents instance's ``/metrics`` reads the
hash and the queue's depth when it is scraped (``QueueMetrics.families``, a scrape-time source of
shared/metrics.py), so every instance shows the same, whole-service figures:

- ``ultrai_analysis_queue_depth{state="queued"|"active"}``: jobs waiting for a worker, jobs running;
- ``ultrai_analysis_queue_wait_seconds`` (histogram): from enqueue to the start of a first delivery;
- ``ultrai_analysis_run_seconds`` (histogram): one delivery's run, from its start to its end;
- ``ultrai_analysis_runs_total{outcome}``: deliveries by how they ended: ``completed``, ``failed``
  (every model failed, or an error on our side), ``superseded`` (cancelled, or taken over by another
  delivery), ``skipped`` (nothing to claim: a repeated delivery of an analysis that had ended),
  ``interrupted`` (the job was aborted, timed out or its worker stopped), and ``abandoned``
  (analyses the queue gave up on after ANALYSIS_ATTEMPTS deliveries, ended as failed by the sweep);
- ``ultrai_analysis_retries_total``: deliveries after the first (a takeover after a worker died).

Failures are ``runs_total{outcome=~"failed|abandoned"}``. When Redis does not answer, the scrape
goes on without these metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from saq import Queue
from saq.queue.redis import RedisQueue

log = logging.getLogger("ultrai_documents.analyses")

Outcome = Literal["completed", "failed", "superseded", "skipped", "interrupted", "abandoned"]
OUTCOMES: tuple[Outcome, ...] = ("completed", "failed", "superseded", "skipped", "interrupted", "abandoned")
WAIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
RUN_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def metrics_key(prefix: str) -> str:
    """The Redis hash of the analysis queue's counters."""
    return f"{prefix}:analysis-metrics"


class QueueMetrics:
    """Records a worker's figures into the hash, and reads them (with the queue's depth) for a scrape."""

    def __init__(self, queue: Queue, prefix: str) -> None:
        if not isinstance(queue, RedisQueue):
            raise TypeError("the analysis queue's metrics are kept in its Redis")
        self.queue = queue
        self.redis = queue.redis
        self.key = metrics_key(prefix)

    async def _add(self, counts: dict[str, float]) -> None:
        """Add to the hash's fields in one round trip; a Redis away loses these figures, not the run."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name, value in counts.items():
                    if isinstance(value, int):
                        pipe.hincrby(self.key, name, value)
                    else:
                        pipe.hincrbyfloat(self.key, name, value)
                await pipe.execute()
        except Exception as exc:
            log.warning("could not record the analysis queue's metrics (%s)", type(exc).__name__)

    async def started(self, attempt: int, wait_seconds: float | None) -> None:
        """A delivery started: its wait in the queue (a first delivery's), or a retry."""
        counts: dict[str, float] = {}
        if attempt > 1:
            counts["retries"] = 1
        if wait_seconds is not None and attempt <= 1:
            counts |= _observe("wait", max(wait_seconds, 0.0), WAIT_BUCKETS)
        if counts:
            await self._add(counts)

    async def ended(self, outcome: Outcome, run_seconds: float | None) -> None:
        """A delivery ended (``run_seconds``), or the sweep ended an abandoned analysis (None)."""
        counts: dict[str, float] = {f"runs:{outcome}": 1}
        if run_seconds is not None:
            counts |= _observe("run", max(run_seconds, 0.0), RUN_BUCKETS)
        await self._add(counts)

    async def families(self) -> list[Metric]:
        """The metrics as a scrape shows them (a ``ScrapeSource``); raises when Redis is away."""
        raw = await self.redis.hgetall(self.key)
        values = {_text(k): float(v) for k, v in raw.items()}
        depth = GaugeMetricFamily(
            "ultrai_analysis_queue_depth", "Analysis jobs in the queue, by state", labels=["state"]
        )
        depth.add_metric(["queued"], await self.queue.count("queued"))
        depth.add_metric(["active"], await self.queue.count("active"))
        runs = CounterMetricFamily(
            "ultrai_analysis_runs", "Deliveries of analyses by how they ended", labels=["outcome"]
        )
        for outcome in OUTCOMES:
            runs.add_metric([outcome], values.get(f"runs:{outcome}", 0.0))
        retries = CounterMetricFamily(
            "ultrai_analysis_retries", "Deliveries of analyses after the first (a takeover after a worker stopped)"
        )
        retries.add_metric([], values.get("retries", 0.0))
        return [
            depth,
            _histogram(
                "ultrai_analysis_queue_wait_seconds",
                "Seconds from enqueue to the start of an analysis' first delivery",
                "wait",
                WAIT_BUCKETS,
                values,
            ),
            _histogram(
                "ultrai_analysis_run_seconds", "Seconds one delivery of an analysis ran", "run", RUN_BUCKETS, values
            ),
            runs,
            retries,
        ]


def _observe(name: str, value: float, buckets: Sequence[float]) -> dict[str, float]:
    """A histogram observation as increments of the hash's fields (cumulative buckets)."""
    counts: dict[str, float] = {f"{name}:count": 1, f"{name}:sum": float(value)}
    for bound in buckets:
        if value <= bound:
            counts[f"{name}:le:{bound}"] = 1
    return counts


def _histogram(
    name: str, documentation: str, field: str, buckets: Sequence[float], values: dict[str, float]
) -> HistogramMetricFamily:
    count = values.get(f"{field}:count", 0.0)
    family = HistogramMetricFamily(name, documentation)
    family.add_metric(
        [],
        [*((str(bound), values.get(f"{field}:le:{bound}", 0.0)) for bound in buckets), ("+Inf", count)],
        sum_value=values.get(f"{field}:sum", 0.0),
    )
    return family


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
