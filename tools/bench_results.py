"""The benchmarks' figures as JSON, and their comparison with the run before.

Each benchmark in bench/ prints its figures and also records them::

    results = Results("startup")
    results.add("gateway start-up p50", 1.02, "s", better="lower")
    results.save()   # bench/results/startup/<UTC time>.json (git-ignored)

``make bench-compare`` (``python -m tools.bench_results``) prints, for every benchmark with two
runs or more, each figure of its latest run beside the run before and their ratio, and marks the
figures that got worse by more than ``--tolerance`` (10 % by default): a regression shows without
reading two logs side by side. The ratios are of single runs on whatever machine ran them; the
mark is a prompt to look, not a verdict (it never fails).

Each run also records two figures of the machine itself (``calibrate``): a pure-Python loop's time
per iteration and a loopback TCP round trip between two threads. CPU time per request moves with
them (the same gateway costs three times the CPU per request on a virtual machine whose wake-ups are
dear), so when they differ between the two runs compared, the report says so above the figures: a
"worse" there may be the machine, not the code.

``BENCH_RESULTS_DIR`` moves the results elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
Better = Literal["lower", "higher"]


def results_dir() -> Path:
    return Path(os.environ.get("BENCH_RESULTS_DIR") or ROOT / "bench" / "results")


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@dataclass
class Results:
    """One run of one benchmark: named figures, each with its unit and which way is better."""

    bench: str
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, name: str, value: float | None, unit: str, *, better: Better) -> None:
        """A figure; ``None`` (not measured this time) is left out."""
        if better not in ("lower", "higher"):
            raise ValueError(f"better must be 'lower' or 'higher', not {better!r}")
        if value is not None:
            self.figures[name] = {"value": float(value), "unit": unit, "better": better}

    def save(self, directory: Path | None = None) -> Path:
        folder = (directory or results_dir()) / self.bench
        folder.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        # Names sort as the runs were made (microseconds, so that quick runs keep their order).
        path = folder / f"{now:%Y%m%dT%H%M%S.%fZ}.json"
        while path.exists():
            now += timedelta(microseconds=1)
            path = folder / f"{now:%Y%m%dT%H%M%S.%fZ}.json"
        record = {
            "bench": self.bench,
            "time": f"{now:%Y-%m-%dT%H:%M:%SZ}",
            "commit": _commit(),
            "machine": {
                "cpus": os.cpu_count(),
                "cpu": _cpu_model(),
                "python": platform.python_version(),
                "load": _load(),
                **calibrate(),
            },
            "figures": self.figures,
        }
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"(figures written to {path})")
        return path


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _python_loop_ns(iterations: int = 200_000) -> float:
    """Nanoseconds per iteration of a plain Python loop (the best of five: the least disturbed)."""
    best = float("inf")
    for _ in range(5):
        total = 0
        started = time.perf_counter()
        for i in range(iterations):
            total += i
        best = min(best, time.perf_counter() - started)
    return best / iterations * 1e9


def _loopback_round_trip_us(trips: int = 400) -> float | None:
    """Median microseconds of a one-byte TCP round trip on 127.0.0.1 between two threads: two
    system calls and a wake-up each way, what a proxied request pays per hop."""
    try:
        server = socket.create_server(("127.0.0.1", 0))
    except OSError:
        return None

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(1):
                conn.sendall(data)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    times = []
    try:
        with socket.create_connection(server.getsockname(), timeout=5) as client:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(trips):
                started = time.perf_counter()
                client.sendall(b"x")
                if not client.recv(1):
                    return None
                times.append(time.perf_counter() - started)
    except OSError:
        return None
    finally:
        server.close()
        thread.join(timeout=5)
    return statistics.median(times[trips // 4 :]) * 1e6


def calibrate() -> dict[str, float]:
    """The machine's own speed, recorded with every run: ``python_loop_ns`` and
    ``loopback_round_trip_us`` (about a third of a second)."""
    figures = {"python_loop_ns": round(_python_loop_ns(), 2)}
    trip = _loopback_round_trip_us()
    if trip is not None:
        figures["loopback_round_trip_us"] = round(trip, 2)
    return figures


CALIBRATION = (("python_loop_ns", "Python loop", "ns"), ("loopback_round_trip_us", "loopback round trip", "µs"))


def machine_change(previous: dict[str, Any], latest: dict[str, Any], tolerance: float = 0.10) -> str | None:
    """A line on how the machine's own figures moved between two runs, when one moved by more than
    ``tolerance``; None when they agree (or a run predates them)."""
    before, now = previous.get("machine") or {}, latest.get("machine") or {}
    parts, moved = [], False
    for key, label, unit in CALIBRATION:
        old, new = before.get(key), now.get(key)
        if not old or not new:
            continue
        ratio = new / old
        moved = moved or abs(ratio - 1) > tolerance
        parts.append(f"{label} {old:.3g} → {new:.3g} {unit} (×{ratio:.2f})")
    if not moved:
        return None
    return "  machine: " + ", ".join(parts) + ": not the same speed; figures of time may move with it"


def runs(bench_dir: Path) -> list[dict[str, Any]]:
    """A benchmark's recorded runs, oldest first (unreadable files are skipped)."""
    out = []
    for path in sorted(bench_dir.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("figures"), dict):
            record["_path"] = str(path)
            out.append(record)
    return out


@dataclass
class Row:
    figure: str
    unit: str
    previous: float | None
    latest: float
    ratio: float | None  # latest / previous
    worse: bool


def compare(previous: dict[str, Any], latest: dict[str, Any], tolerance: float = 0.10) -> list[Row]:
    """Each figure of ``latest`` beside ``previous``: worse when it moved the wrong way by more than
    ``tolerance`` (a fraction)."""
    rows = []
    for name, fig in latest["figures"].items():
        before = previous["figures"].get(name)
        value = float(fig["value"])
        if before is None:
            rows.append(Row(name, fig["unit"], None, value, None, False))
            continue
        old = float(before["value"])
        ratio = value / old if old else None
        if ratio is None:
            worse = value != old and (value > old) == (fig["better"] == "lower")
        elif fig["better"] == "lower":
            worse = ratio > 1 + tolerance
        else:
            worse = ratio < 1 - tolerance
        rows.append(Row(name, fig["unit"], old, value, ratio, worse))
    return rows


def report(directory: Path, tolerance: float = 0.10, only: str | None = None) -> str:
    lines: list[str] = []
    if not directory.is_dir():
        return f"No results yet in {directory}: run `make bench` (or one bench/bench_*.py) first."
    for bench_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        if only and bench_dir.name != only:
            continue
        recorded = runs(bench_dir)
        if len(recorded) < 2:
            lines.append(f"== {bench_dir.name}: {len(recorded)} run, nothing to compare yet\n")
            continue
        previous, latest = recorded[-2], recorded[-1]
        lines.append(
            f"== {bench_dir.name}: {latest['time']} ({latest.get('commit') or '?'}) "
            f"against {previous['time']} ({previous.get('commit') or '?'})"
        )
        change = machine_change(previous, latest, tolerance)
        if change:
            lines.append(change)
        rows = compare(previous, latest, tolerance)
        width = max(len(r.figure) for r in rows) if rows else 10
        lines.append(f"  {'figure':<{width}} {'before':>12} {'now':>12} {'ratio':>7}")
        for r in rows:
            before = f"{r.previous:.4g}" if r.previous is not None else "-"
            ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
            mark = "  worse" if r.worse else ""
            lines.append(f"  {r.figure:<{width}} {before:>12} {r.latest:>8.4g} {r.unit:<3} {ratio:>7}{mark}")
        worse = sum(r.worse for r in rows)
        lines.append(
            f"  {worse} of {len(rows)} figures worse by more than {tolerance:.0%} "
            "(single runs: look again before believing it)\n"
        )
    return "\n".join(lines) if lines else f"No benchmark named {only!r} in {directory}."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare each benchmark's latest run with the one before.")
    parser.add_argument("bench", nargs="?", help="only this benchmark (a folder name under the results)")
    parser.add_argument("--tolerance", type=float, default=0.10, help="a fraction: 0.10 marks a 10%% move (default)")
    args = parser.parse_args(argv)
    print(report(results_dir(), args.tolerance, args.bench))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
