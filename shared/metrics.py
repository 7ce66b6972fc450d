"""Prometheus metrics: request counts and latency by route template, cache and upstream counters.

With several worker processes (``WEB_CONCURRENCY`` > 1) or ``PROMETHEUS_MULTIPROC_DIR`` set, the
metrics are kept in prometheus_client's multiprocess mode: each worker writes its values to
memory-mapped files in a directory of the instance's own, and ``/metrics``, whichever worker
answers it, sums every worker of the instance. The directory is
``$PROMETHEUS_MULTIPROC_DIR/<supervisor pid>-<its start time>`` (the base defaults to
``<tmp>/ultrai-metrics``): new for each start of the instance, and the directories of instances
no longer running are removed when a worker starts. With one worker and no
``PROMETHEUS_MULTIPROC_DIR``, metrics stay in the process as before.

A metric of a module of its own is made with ``counter``, ``gauge`` or ``histogram`` below (at
import, at module level), so that it is right in both modes: a gauge says how the workers' values
combine (``"livesum"`` for a level such as a queue's depth, ``"max"``, ``"mostrecent"``...).

Metrics that another process keeps (a background worker, which serves no HTTP) or that only a
store can tell (a queue's depth) are read when ``/metrics`` is scraped: a service puts an async
``ScrapeSource`` in ``app.state.metric_sources``; each scrape awaits them (a bounded wait; one
that fails or is slow is left out of that scrape, never failing it) and a collector registered on
the registry ``/metrics`` serves (in either mode) yields what they returned.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from multiprocessing import parent_process
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Request, Response

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Set in a worker to the directory it chose, so that a process it starts does not nest another one.
_INSTANCE_ENV = "ULTRAI_METRICS_INSTANCE_DIR"


def _start_time(pid: int) -> str:
    """The process' start time as the kernel counts it (Linux), or "" where /proc is not there:
    with the pid it names one run of a process even when the pid is used again."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _instance_dir() -> Path | None:
    """The directory of this instance's metric files, made (and stale ones removed) when metrics
    are kept per process in files; None when they stay in this process' memory."""
    chosen = os.environ.get(_INSTANCE_ENV)
    if chosen and os.environ.get(MULTIPROC_ENV) == chosen:
        return Path(chosen)
    base = os.environ.get(MULTIPROC_ENV)
    try:
        workers = int(os.environ.get("WEB_CONCURRENCY", "1") or 1)
    except ValueError:
        workers = 1
    if not base and workers <= 1:
        return None
    root = Path(base or Path(tempfile.gettempdir()) / "ultrai-metrics")
    # uvicorn's workers are started by its supervisor (multiprocessing): the instance is the
    # supervisor. A single process serving alone is its own instance.
    parent = parent_process()
    supervisor = parent.pid if parent is not None and parent.pid is not None else os.getpid()
    own = root / f"{supervisor}-{_start_time(supervisor)}"
    own.mkdir(parents=True, exist_ok=True)
    for other in root.iterdir():
        pid, _, started = other.name.partition("-")
        if other == own or not other.is_dir() or not pid.isdigit():
            continue
        if not _alive(int(pid)) or _start_time(int(pid)) != started:
            shutil.rmtree(other, ignore_errors=True)
    os.environ[MULTIPROC_ENV] = os.environ[_INSTANCE_ENV] = str(own)
    return own


MULTIPROC_DIR = _instance_dir()

# Imported after the directory is chosen: prometheus_client picks its kind of value at import.
from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.metrics_core import Metric  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402

if MULTIPROC_DIR is not None and not getattr(values.ValueClass, "_multiprocess", False):
    # prometheus_client was imported before the directory was set (by a library): switch it over.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)

log = logging.getLogger("shared.metrics")

# Metrics read at scrape time: an async function returning metric families (see the module's doc).
ScrapeSource = Callable[[], Awaitable[Iterable[Metric]]]
# The longest a scrape waits for one source.
SCRAPE_SOURCE_SECONDS = 2.0
# What this scrape's sources returned (a context variable: concurrent scrapes do not mix).
_SCRAPED: contextvars.ContextVar[tuple[Metric, ...]] = contextvars.ContextVar("scraped_metrics", default=())


class _ScrapedCollector(Collector):
    """Yields the families the current scrape's sources returned; registered on every registry
    ``/metrics`` serves."""

    def collect(self) -> Iterator[Metric]:
        yield from _SCRAPED.get()

    def describe(self) -> Iterable[Metric]:
        # Names unknown until scraped: nothing to check at registration.
        return ()


_SCRAPED_COLLECTOR = _ScrapedCollector()
REGISTRY.register(_SCRAPED_COLLECTOR)


async def read_sources(sources: Sequence[ScrapeSource], wait_seconds: float = SCRAPE_SOURCE_SECONDS) -> list[Metric]:
    """The families of every source that answers within ``wait_seconds``; the others are left out."""

    async def one(source: ScrapeSource) -> list[Metric]:
        try:
            return list(await asyncio.wait_for(source(), wait_seconds))
        except Exception as exc:  # a store away or slow: these metrics are missing from this scrape
            name = getattr(source, "__qualname__", repr(source))
            log.warning("metrics source %s left out of this scrape (%s)", name, type(exc).__name__)
            return []

    found: list[Metric] = []
    for families in await asyncio.gather(*(one(source) for source in sources)):
        found.extend(families)
    return found


Combine = Literal[
    "livesum", "liveall", "livemax", "livemin", "livemostrecent", "sum", "max", "min", "mostrecent", "all"
]


def counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
    """A counter in this service's registry, summed over the workers in multiprocess mode."""
    return Counter(name, documentation, list(labels), registry=REGISTRY)


def gauge(name: str, documentation: str, labels: Sequence[str] = (), *, combine: Combine = "livesum") -> Gauge:
    """A gauge in this service's registry. ``combine`` says how the workers' values make the
    instance's in multiprocess mode: ``"livesum"`` (the sum over the running workers: a depth, a
    number in progress), ``"liveall"`` (one series per running worker, labelled ``pid``),
    ``"max"``, ``"min"``, ``"sum"`` or ``"mostrecent"`` (see prometheus_client's multiprocess
    mode). A gauge whose value is computed when scraped (``set_function``) is not supported
    there: set it when it changes."""
    return Gauge(name, documentation, list(labels), registry=REGISTRY, multiprocess_mode=combine)


def histogram(name: str, documentation: str, labels: Sequence[str] = (), *, buckets: Sequence[float]) -> Histogram:
    """A histogram in this service's registry (a wait, a run time), summed over the workers in
    multiprocess mode."""
    return Histogram(name, documentation, list(labels), buckets=list(buckets), registry=REGISTRY)


def _forget_dead_workers(directory: Path) -> None:
    """A worker that exited (and was replaced) leaves its files: its counts stay in the totals, as
    they should, but its live gauges go (prometheus_client's ``mark_process_dead``)."""
    for path in directory.glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), str(directory))  # type: ignore[no-untyped-call]


def render_metrics(scraped: Iterable[Metric] = ()) -> bytes:
    """This instance's metrics in the Prometheus text format: every worker's, in multiprocess mode,
    with ``scraped`` (what the scrape-time sources returned)."""
    token = _SCRAPED.set(tuple(scraped))
    try:
        if MULTIPROC_DIR is None:
            return generate_latest(REGISTRY)
        _forget_dead_workers(MULTIPROC_DIR)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(MULTIPROC_DIR))  # type: ignore[no-untyped-call]
        registry.register(_SCRAPED_COLLECTOR)
        return generate_latest(registry)
    finally:
        _SCRAPED.reset(token)


REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests by route template",
    ["service", "method", "route", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route template",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
CACHE = Counter("cache_requests_total", "Cache lookups by result", ["service", "cache", "result"], registry=REGISTRY)
UPSTREAM_ERRORS = Counter(
    "upstream_errors_total",
    "Failed calls to another service or provider",
    ["service", "upstream", "kind"],
    registry=REGISTRY,
)
KV_FALLBACK = Counter(
    "kv_fallback_total",
    "Key-value operations served in process because Redis was unavailable",
    ["service"],
    registry=REGISTRY,
)
KV_BUSY = Counter(
    "kv_busy_total",
    "Key-value operations that found every pooled Redis connection in use for the whole bounded wait",
    ["service"],
    registry=REGISTRY,
)

REVOCATION_UNKNOWN = Counter(
    "token_revocation_unknown_total",
    "Token checks refused (503) because neither the shared store nor auth could say whether it was revoked",
    ["service"],
    registry=REGISTRY,
)

ERASED = Counter(
    "account_erasures_total",
    "Deleted accounts whose data this service erased and reported to auth",
    ["service"],
    registry=REGISTRY,
)
ERASURE_FAILURES = Counter(
    "account_erasure_failures_total",
    "Erasure sweeps that failed (auth or the database unreachable, an erase that raised); retried",
    ["service"],
    registry=REGISTRY,
)
ERASURE_SWEPT_AT = Gauge(
    "account_erasure_last_sweep_timestamp_seconds",
    "When this service last finished an erasure sweep (Unix time): alert when it falls behind",
    ["service"],
    registry=REGISTRY,
    multiprocess_mode="max",
)


def metrics_router() -> APIRouter:
    router = APIRouter(tags=["metrics"])

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def metrics(request: Request) -> Response:
        sources: list[ScrapeSource] = getattr(request.app.state, "metric_sources", [])
        scraped = await read_sources(sources) if sources else []
        return Response(render_metrics(scraped), media_type=CONTENT_TYPE_LATEST)

    return router
