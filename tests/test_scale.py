"""bench/scale.py's arithmetic and files: sizes, the linear extrapolation, the CSV and the chart
(pure: the benchmark's measurements need a long run on real data, ``python -m bench.scale``)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from bench.scale import Point, chart, extrapolation_ratios, medians, parse_sizes, read_csv, write_csv


def point(fills: int, seconds: float, engine: str = "served", kind: str = "full") -> Point:
    return Point(
        fills=fills,
        engine=engine,
        kind=kind,
        slice_rows=fills // 7,
        changed_keys=None if kind == "full" else fills // 140,
        seconds=seconds,
        cpu_seconds=seconds * 1.5,
        query_peak_mb=fills / 50_000 if engine == "served" else None,
        process_peak_mb=fills / 20_000,
        rows_read=fills * 9 if engine == "served" else None,
    )


def test_sizes_are_read_in_millions_or_as_numbers() -> None:
    assert parse_sizes("5M, 10m,1.5M,200000") == [5_000_000, 10_000_000, 1_500_000, 200_000]


def test_a_run_is_compared_with_its_own_engine_and_kind_at_20m_scaled_linearly() -> None:
    points = [
        point(20_000_000, 100),
        point(100_000_000, 600),  # 500 s would be linear: 1.2x
        point(20_000_000, 10, kind="incremental"),
        point(100_000_000, 40, kind="incremental"),  # 50 s linear: 0.8x
        point(100_000_000, 900, engine="embedded"),  # no embedded run at 20M: no ratio
    ]
    ratios = extrapolation_ratios(points)
    assert ratios[("served", "full", 100_000_000)] == pytest.approx(1.2)
    assert ratios[("served", "full", 20_000_000)] == pytest.approx(1.0)
    assert ratios[("served", "incremental", 100_000_000)] == pytest.approx(0.8)
    assert ("embedded", "full", 100_000_000) not in ratios


def test_the_csv_gives_back_the_points(tmp_path: Path) -> None:
    points = [point(5_000_000, 12.5), point(5_000_000, 3.25, kind="incremental"), point(5_000_000, 14, "embedded")]
    write_csv(tmp_path / "scale.csv", points)
    assert read_csv(tmp_path / "scale.csv") == points


def test_the_chart_draws_each_engine_and_kind_and_the_full_runs_linear_extrapolation() -> None:
    points = [
        point(f, f / 200_000, engine, kind)
        for f in (5_000_000, 20_000_000, 100_000_000)
        for engine in ("served", "embedded")
        for kind in ("full", "incremental")
    ]
    root = ET.fromstring(chart(points, 8.0))
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    for label in ("full, served", "incremental, embedded", "full, served: linear from 20M", "max_memory_usage 8 GB"):
        assert label in texts
    lines = list(root.iter("{http://www.w3.org/2000/svg}polyline"))
    # time: 4 series + 2 extrapolations; statement memory: served only (2); process memory: 4
    assert len(lines) == 6 + 2 + 4


def test_repeats_are_reported_as_medians_with_the_highest_memory() -> None:
    runs = [point(20_000_000, s) for s in (30, 90, 40)]
    runs[1] = Point(**{**runs[1].__dict__, "process_peak_mb": 5000.0})
    (summary,) = medians(runs)
    assert summary.seconds == 40 and summary.cpu_seconds == 60
    assert summary.process_peak_mb == 5000.0
    assert medians([*runs, point(5_000_000, 9)])[0].fills == 5_000_000  # in order of size
