"""The benchmarks' recorded figures and their comparison (tools/bench_results.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.bench_results import Results, compare, main, report, runs


def _run(directory: Path, figures: dict[str, tuple[float, str, str]]) -> Path:
    results = Results("gateway")
    for name, (value, unit, better) in figures.items():
        results.add(name, value, unit, better=better)  # type: ignore[arg-type]
    return results.save(directory)


def test_a_run_is_saved_as_json_with_its_figures_and_context(tmp_path: Path) -> None:
    results = Results("startup")
    results.add("gateway start-up p50", 1.25, "s", better="lower")
    results.add("not measured this time", None, "ms", better="lower")
    path = results.save(tmp_path)
    record = json.loads(path.read_text())
    assert path.parent == tmp_path / "startup"
    assert record["bench"] == "startup"
    assert record["figures"] == {"gateway start-up p50": {"value": 1.25, "unit": "s", "better": "lower"}}
    assert record["machine"]["cpus"] >= 1 and record["time"].endswith("Z")
    # A second run within the same second gets a file of its own.
    again = results.save(tmp_path)
    assert again != path and len(runs(tmp_path / "startup")) == 2


def test_which_way_is_better_must_be_said() -> None:
    with pytest.raises(ValueError):
        Results("x").add("p50", 1.0, "ms", better="smaller")  # type: ignore[arg-type]


def test_the_latest_run_is_compared_with_the_one_before(tmp_path: Path) -> None:
    _run(
        tmp_path,
        {
            "p50 overhead": (2.0, "ms", "lower"),
            "throughput": (1000.0, "req/s", "higher"),
            "rss": (90.0, "MB", "lower"),
            "logins": (80.0, "/s", "higher"),
        },
    )
    _run(
        tmp_path,
        {
            "p50 overhead": (2.6, "ms", "lower"),  # 30 % slower: worse
            "throughput": (950.0, "req/s", "higher"),  # 5 % less: within the tolerance
            "rss": (70.0, "MB", "lower"),  # better
            "logins": (60.0, "/s", "higher"),  # 25 % fewer: worse
            "new figure": (1.0, "ms", "lower"),  # nothing to compare with
        },
    )
    previous, latest = runs(tmp_path / "gateway")
    rows = {r.figure: r for r in compare(previous, latest)}
    assert rows["p50 overhead"].worse and rows["p50 overhead"].ratio == pytest.approx(1.3)
    assert not rows["throughput"].worse and rows["throughput"].ratio == pytest.approx(0.95)
    assert not rows["rss"].worse
    assert rows["logins"].worse
    assert rows["new figure"].previous is None and not rows["new figure"].worse
    # A wider tolerance forgives the 25 % and 30 % moves.
    assert not any(r.worse for r in compare(previous, latest, tolerance=0.5))

    text = report(tmp_path)
    assert "2 of 5 figures worse" in text
    line = next(x for x in text.splitlines() if "p50 overhead" in x)
    assert "1.30" in line and line.rstrip().endswith("worse")


def test_the_report_says_when_there_is_nothing_to_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "No results yet" in report(tmp_path / "none")
    _run(tmp_path, {"p50": (1.0, "ms", "lower")})
    assert "1 run, nothing to compare yet" in report(tmp_path)
    # A file that is not a run (half-written, edited by hand) is skipped, not fatal.
    (tmp_path / "gateway" / "zz-broken.json").write_text("{")
    assert len(runs(tmp_path / "gateway")) == 1
    assert "No benchmark named 'other'" in report(tmp_path, only="other")


def test_the_command_reads_bench_results_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path))
    _run(tmp_path, {"p50": (1.0, "ms", "lower")})
    _run(tmp_path, {"p50": (2.0, "ms", "lower")})
    assert main(["gateway"]) == 0
    out = capsys.readouterr().out
    assert "== gateway" in out and "2.00" in out and "worse" in out


def test_each_run_records_the_machines_own_speed(tmp_path: Path) -> None:
    machine = json.loads(_run(tmp_path, {"p50": (1.0, "ms", "lower")}).read_text())["machine"]
    assert 0 < machine["python_loop_ns"] < 10_000
    assert 0 < machine["loopback_round_trip_us"] < 1_000_000


def _set_machine(path: Path, loop_ns: float, trip_us: float) -> None:
    record = json.loads(path.read_text())
    record["machine"].update(python_loop_ns=loop_ns, loopback_round_trip_us=trip_us)
    path.write_text(json.dumps(record))


def test_the_report_says_when_the_machine_is_not_the_same_speed(tmp_path: Path) -> None:
    first = _run(tmp_path, {"gateway CPU per request": (0.3, "ms", "lower")})
    second = _run(tmp_path, {"gateway CPU per request": (0.9, "ms", "lower")})
    _set_machine(first, 55.0, 20.0)
    _set_machine(second, 110.0, 62.0)
    text = report(tmp_path)
    machine = next(x for x in text.splitlines() if "machine:" in x)
    assert "×2.00" in machine and "×3.10" in machine
    # Before the figures it may explain.
    assert text.index("machine:") < text.index("gateway CPU per request")

    # Within the tolerance, or a run from before the calibration: nothing said.
    _set_machine(second, 57.0, 21.0)
    assert "machine:" not in report(tmp_path)
    record = json.loads(first.read_text())
    del record["machine"]["python_loop_ns"], record["machine"]["loopback_round_trip_us"]
    first.write_text(json.dumps(record))
    _set_machine(second, 110.0, 62.0)
    assert "machine:" not in report(tmp_path)
