"""Start-up time and resident memory of each service, started as `make dev` and the tests start it.

Start-up: from process launch to the first 200 on /live (median of RUNS starts).
Memory: resident set size a second after start, with no traffic.
Usage: python bench/bench_startup.py [RUNS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.bench_results import Results
from tools.stack import SERVICES, ServiceProcess, free_port


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("gateway", "auth", "documents", "llm"):
            times, rss = [], []
            for i in range(runs):
                proc = ServiceProcess(
                    SERVICES[name],
                    free_port(),
                    env={"DATA_DIR": f"{tmp}/{name}-{i}", "LOG_LEVEL": "WARNING"},
                    log_path=Path(tmp) / f"{name}.log",
                ).start()
                try:
                    times.append(proc.wait_ready("/live", timeout=90))
                    time.sleep(1.0)
                    rss.append(proc.rss_mb())
                finally:
                    proc.stop()
            rows.append((name, statistics.median(times), min(times), statistics.median(rss)))
    print(f"{'service':<10} {'start-up p50 (s)':>17} {'best (s)':>9} {'RSS p50 (MB)':>13}")
    results = Results("startup")
    for name, med, best, rss in rows:
        print(f"{name:<10} {med:>17.2f} {best:>9.2f} {rss:>13.1f}")
        results.add(f"{name} start-up p50", med, "s", better="lower")
        results.add(f"{name} RSS p50", rss, "MB", better="lower")
    print(f"({runs} starts each; SQLite and in-process cache; time to first 200 on /live)")
    results.save()


if __name__ == "__main__":
    main()
