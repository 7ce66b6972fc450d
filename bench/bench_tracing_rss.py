"""What traces cost in memory: each service's resident memory after start and after a few requests,
without OTEL_EXPORTER_OTLP_ENDPOINT (nothing of OpenTelemetry's SDK is imported) and with it
(pointed at a closed loopback port: spans are made and their export fails quietly).

Needs the optional packages of shared/requirements-otel.txt installed for the second column.

Usage: python bench/bench_tracing_rss.py [service ...]   (default: gateway auth documents llm)
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.bench_results import Results  # noqa: E402
from tools.stack import SERVICES, ServiceProcess, free_port  # noqa: E402

REQUESTS = 50


def measure(name: str, extra: dict[str, str]) -> float:
    workdir = Path(tempfile.mkdtemp(prefix="ultrai-rss-"))
    env = {
        "ENVIRONMENT": "test",
        "DATA_DIR": str(workdir),
        "LOG_LEVEL": "WARNING",
        **{spec.url_env: "http://127.0.0.1:9" for spec in SERVICES.values() if spec.name != "gateway"},
        **extra,
    }
    proc = ServiceProcess(SERVICES[name], free_port(), env=env, log_path=workdir / "log").start()
    try:
        proc.wait_ready(timeout=90)
        for _ in range(REQUESTS):
            with urllib.request.urlopen(proc.url + "/", timeout=5) as resp:
                resp.read()
        return proc.rss_mb()
    finally:
        proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    names = sys.argv[1:] or ["gateway", "auth", "documents", "llm"]
    traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    print(f"{'service':<10} {'RSS off (MB)':>13} {'RSS on (MB)':>12} {'cost (MB)':>10}")
    results = Results("tracing_rss")
    for name in names:
        off, on = measure(name, {}), measure(name, traced)
        print(f"{name:<10} {off:>13.1f} {on:>12.1f} {on - off:>10.1f}")
        results.add(f"{name} RSS off", off, "MB", better="lower")
        results.add(f"{name} RSS on", on, "MB", better="lower")
        results.add(f"{name} cost", on - off, "MB", better="lower")
    results.save()


if __name__ == "__main__":
    main()
