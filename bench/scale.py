"""Scale benchmark: full and incremental runs of the reference at growing sizes, on the embedded
engine and served over HTTP, as a table and as curves.

    .venv/bin/python -m bench.scale [--fills 5M,10M,20M,50M,100M] [--engines served,embedded]
                                    [--kinds full,incremental] [--repeat 1]
                                    [--data-dir DIR] [--out bench/results]

For each size, on a served engine of its own (``bench/server.py``): generate the workload and build
its whole history (``bench.workload.prepare``: the generator writes the fills in sorted chunks of 4M
rows, and the history is built in batches of at most ~6M fills' positions, so neither grows with the
size). Then on each engine in turn, with the incremental manifest (``tablerefresh-incremental.yaml``,
the reference refreshed incrementally; the source in its 8 batches, under ``max_memory_usage`` 8 GB):

1. a full run (forced);
2. a new fill in 5% of the slice's positions, chosen uniformly (``bench.incremental.change``: the
   worst case for an incremental run, every granule of the fills holds a changed position);
3. an incremental run.

``--repeat N`` runs each engine's steps N times on the same data (each incremental run after a
change of its own) and reports medians, the highest memory.

Each run is a process of its own, as a Job is: on ``served``, a client of the server; on
``embedded``, a process with the engine inside it, the server stopped meanwhile (one engine opens a
directory at a time). Measured per run:

- seconds: the run's own duration;
- CPU seconds: on ``served``, the server process's and the client's during the run; on
  ``embedded``, the refresh process's;
- query peak: the largest statement's ``memory_usage`` (what ``max_memory_usage`` bounds; a server
  reports it, chDB does not);
- process peak: the peak resident set of the process the engine runs in (the server's over the
  run, reset at its start; the refresh process's), which is what a Pod's memory limit sees;
- rows read: the statements that build, carry and swap rows (a server reports them; chDB reports
  none for ``INSERT … SELECT``).

Prints the table, then each size's time as a ratio to the linear extrapolation from the 20M run
measured in the same run (machines here are noisy), and writes ``scale.csv`` and ``scale.svg`` (time
and memory against fills) to ``--out``. Asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from bench import plot
from bench.incremental import Clock, change, incremental_spec
from bench.server import BenchServer, client_process, client_request
from bench.workload import Workload, measured, prepare, settle
from tablerefresh.dataplane.run.runs import RunRecord
from tablerefresh.spec import TableRefreshSpec, memory_limit_bytes
from tablerefresh.workloads import polymarket

ENGINES = ("served", "embedded")
KINDS = ("full", "incremental")
SIZES = (5_000_000, 10_000_000, 20_000_000, 50_000_000, 100_000_000)
REFERENCE_SIZE = 20_000_000  # the extrapolation's base: bench.refresh's default size
CHANGED = 5  # percent of the slice's positions an incremental run finds changed
MB = 2**20  # the *_mb figures are MiB, as /proc and the engine count them
SETTLE_SECONDS = 3600  # merges of freshly generated 100M fills take minutes: a run does not pay for them


@dataclass(frozen=True)
class Point:
    """One measured run."""

    fills: int
    engine: str
    kind: str
    slice_rows: int
    changed_keys: int | None
    seconds: float
    cpu_seconds: float
    query_peak_mb: float | None
    process_peak_mb: float
    rows_read: int | None


@dataclass(frozen=True)
class Setup:
    """Generating one size's data and building its history, on the server."""

    fills: int
    rows: int
    seconds: float
    process_peak_mb: float
    tracked_peak_mb: float


def parse_sizes(text: str) -> list[int]:
    """``5M,10M,1.5e6,200000`` as fill counts."""
    sizes = []
    for part in text.split(","):
        part = part.strip().upper()
        scale = 1_000_000 if part.endswith("M") else 1
        sizes.append(int(float(part.rstrip("M")) * scale))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--fills", type=parse_sizes, default=list(SIZES), help="sizes, e.g. 5M,10M,20M")
    parser.add_argument("--engines", default=",".join(ENGINES), help="served, embedded or both")
    parser.add_argument("--data-dir", type=Path, help="where each size's engine lives (default: a temporary directory)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="where scale.csv and scale.svg go")
    parser.add_argument("--kinds", default=",".join(KINDS), help="full, incremental or both")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement: the median is reported")
    args = parser.parse_args()
    engines, kinds = choices(parser, "engines", args.engines, ENGINES), choices(parser, "kinds", args.kinds, KINDS)
    started = time.monotonic()
    points: list[Point] = []
    setups: list[Setup] = []
    with tempfile.TemporaryDirectory(prefix="tablerefresh-scale-") as tmp:
        for fills in args.fills:
            data_dir = (args.data_dir or Path(tmp)) / f"fills-{fills}"
            print(f"\n== {fills:,} fills ({data_dir})", flush=True)
            setup, measured_points = measure_size(data_dir, fills, engines, kinds, args.repeat)
            setups.append(setup)
            points.extend(measured_points)
            if args.data_dir is None:  # each size's data is the disk's largest user
                shutil.rmtree(data_dir)
            report(points, setups)  # so far: a long run shows its figures as they come
    print(f"\nwhole benchmark {time.monotonic() - started:.0f}s")
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "scale.csv", points)
    limit = memory_limit_bytes(polymarket.incremental_manifest().spec.clickhouse.settings)
    (args.out / "scale.svg").write_text(chart(points, limit / 1e9 if limit else None))
    print(f"wrote {args.out / 'scale.csv'} and {args.out / 'scale.svg'}")


def choices(parser: argparse.ArgumentParser, name: str, text: str, allowed: Sequence[str]) -> list[str]:
    chosen = [c.strip() for c in text.split(",")]
    unknown = set(chosen) - set(allowed)
    if unknown:
        parser.error(f"unknown {name} {sorted(unknown)}: choose from {', '.join(allowed)}")
    return [c for c in allowed if c in chosen]


def measure_size(
    data_dir: Path, fills: int, engines: Sequence[str], kinds: Sequence[str], repeat: int
) -> tuple[Setup, list[Point]]:
    data_dir.mkdir(parents=True, exist_ok=True)
    with BenchServer(data_dir / "chdb") as server:
        mark = server.mark()
        began = time.monotonic()
        w = prepare(data_dir, fills, progress=lambda m: print(f"  {m}", flush=True), server=server)
        seconds = time.monotonic() - began
        use = server.since(mark)
        rows = int(w.client.query(f"SELECT count() FROM {polymarket.TARGET_TABLE}").result_rows[0][0])
        setup = Setup(fills, rows, seconds, use.peak_mb, use.tracked_peak_mb)
        print(
            f"  set up in {seconds:.0f}s: server peak {use.peak_mb:,.0f} MiB, engine tracked peak "
            f"{use.tracked_peak_mb:,.0f} MiB",
            flush=True,
        )
        spec, source = incremental_spec(w)
        clock = Clock(w.now)
        points: list[Point] = []
        batch = 0
        for _ in range(repeat):
            for engine in engines:
                batch += 1
                for kind in kinds:
                    if kind == "incremental":
                        change(w.client, spec, clock, CHANGED, batch)
                    settle(w.client, SETTLE_SECONDS)
                    point = run_on(engine, w, server, spec, source, clock, fills, kind)
                    print(
                        f"  {engine:<9}{kind:<12}{point.seconds:>8.1f}s  {point.process_peak_mb:>8,.0f} MiB", flush=True
                    )
                    points.append(point)
    return setup, points


def run_on(
    engine: str,
    w: Workload,
    server: BenchServer,
    spec: TableRefreshSpec,
    source: str,
    clock: Clock,
    fills: int,
    kind: str,
) -> Point:
    full = kind == "full"
    run_time = clock.next_run()
    if engine == "served":
        m = measured(w, spec, source, run_time, full=full)
        return point(fills, engine, kind, m.record, m.cpu, m.server_peak_mb or 0.0)
    with stopped(server):
        url = f"chdb://{server.data_dir}"
        record, answer = client_process(client_request(url, spec, source, run_time, full=full))
    if record.outcome != "Succeeded":
        raise RuntimeError(f"the embedded {kind} run failed: {record.error}")
    return point(fills, engine, kind, record, answer["cpu"], answer["rss_mb"])


def point(fills: int, engine: str, kind: str, record: RunRecord, cpu: float, process_peak_mb: float) -> Point:
    expected = "Full" if kind == "full" else "Incremental"
    if record.kind != expected:
        raise RuntimeError(f"a {kind} run ran as {record.kind}: {record.kind_reason}")
    served = engine == "served"  # on the embedded engine the record's peak is the process's own
    return Point(
        fills=fills,
        engine=engine,
        kind=kind,
        slice_rows=record.slice_rows_after,
        changed_keys=record.changed_keys,
        seconds=record.duration_seconds,
        cpu_seconds=cpu,
        query_peak_mb=record.peak_memory_bytes / MB if served and record.peak_memory_bytes is not None else None,
        process_peak_mb=process_peak_mb,
        rows_read=record.read_rows if served else None,
    )


@contextmanager
def stopped(server: BenchServer) -> Iterator[None]:
    """The server down (its directory free for an embedded engine), then up again on the same data."""
    server.stop()
    try:
        yield
    finally:
        server.restart()


# -- what it prints and writes ---------------------------------------------------------------------


def medians(points: Sequence[Point]) -> list[Point]:
    """One point per size, engine and kind of run: the median of its repeats' seconds, CPU and rows
    read, the highest of their memory (what a server must hold), the last one's slice."""
    groups: dict[tuple[int, str, str], list[Point]] = {}
    for p in points:
        groups.setdefault((p.fills, p.engine, p.kind), []).append(p)
    out = []
    for runs in groups.values():
        last = runs[-1]
        out.append(
            replace(
                last,
                seconds=statistics.median(p.seconds for p in runs),
                cpu_seconds=statistics.median(p.cpu_seconds for p in runs),
                query_peak_mb=max((p.query_peak_mb for p in runs if p.query_peak_mb is not None), default=None),
                process_peak_mb=max(p.process_peak_mb for p in runs),
                rows_read=_median_int([p.rows_read for p in runs if p.rows_read is not None]),
                changed_keys=_median_int([p.changed_keys for p in runs if p.changed_keys is not None]),
            )
        )
    return sorted(out, key=lambda p: (p.fills, ENGINES.index(p.engine), KINDS.index(p.kind)))


def _median_int(values: list[int]) -> int | None:
    return int(statistics.median(values)) if values else None


def extrapolation_ratios(
    points: Sequence[Point], base_fills: int = REFERENCE_SIZE
) -> dict[tuple[str, str, int], float]:
    """Each run's seconds over the linear extrapolation of the same engine and kind's run at
    ``base_fills``: 1.0 is exactly linear, 1.2 is 20% slower than linear."""
    base = {(p.engine, p.kind): p for p in points if p.fills == base_fills}
    ratios = {}
    for p in points:
        b = base.get((p.engine, p.kind))
        if b is not None and b.seconds > 0:
            ratios[(p.engine, p.kind, p.fills)] = p.seconds / (b.seconds * p.fills / b.fills)
    return ratios


def report(measured_points: Sequence[Point], setups: Sequence[Setup]) -> None:
    points = medians(measured_points)
    ratios = extrapolation_ratios(points)
    repeats = max(Counter((p.fills, p.engine, p.kind) for p in measured_points).values(), default=1)
    if repeats > 1:
        print(f"\nmedians of {repeats} runs (memory: the highest)")
    print(
        f"\n{'fills':>12}{'engine':>10}{'run':>13}{'slice rows':>12}{'changed':>11}{'seconds':>9}{'vs linear':>10}"
        f"{'CPU s':>9}{'query peak MiB':>16}{'process peak MiB':>18}{'rows read':>15}"
    )
    for p in points:
        ratio = ratios.get((p.engine, p.kind, p.fills))
        print(
            f"{p.fills:>12,}{p.engine:>10}{p.kind:>13}{p.slice_rows:>12,}{_n(p.changed_keys):>11}{p.seconds:>9.1f}"
            f"{'' if ratio is None else f'{ratio:.2f}':>10}{p.cpu_seconds:>9.1f}{_mb(p.query_peak_mb):>16}"
            f"{p.process_peak_mb:>18,.0f}{_n(p.rows_read):>15}"
        )
    print(
        "vs linear: seconds over the same engine and run's at 20M fills times fills/20M; query peak: the largest "
        "statement's memory_usage (served only); process peak: the resident set of the process the engine runs in"
    )
    print(f"\n{'fills':>12}{'history rows':>14}{'set-up s':>10}{'server peak MiB':>17}{'engine tracked MiB':>20}")
    for s in sorted(setups, key=lambda s: s.fills):
        print(f"{s.fills:>12,}{s.rows:>14,}{s.seconds:>10.0f}{s.process_peak_mb:>17,.0f}{s.tracked_peak_mb:>20,.0f}")
    print("set-up: generating the fills and building the whole history, on the server")


def _n(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _mb(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def write_csv(path: Path, points: Sequence[Point]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=[f.name for f in fields(Point)])
        writer.writeheader()
        writer.writerows(asdict(p) for p in points)


def read_csv(path: Path) -> list[Point]:
    """The points ``write_csv`` wrote (to redraw the chart without measuring again)."""
    with path.open() as rows:
        return [
            Point(
                fills=int(r["fills"]),
                engine=r["engine"],
                kind=r["kind"],
                slice_rows=int(r["slice_rows"]),
                changed_keys=int(r["changed_keys"]) if r["changed_keys"] else None,
                seconds=float(r["seconds"]),
                cpu_seconds=float(r["cpu_seconds"]),
                query_peak_mb=float(r["query_peak_mb"]) if r["query_peak_mb"] else None,
                process_peak_mb=float(r["process_peak_mb"]),
                rows_read=int(r["rows_read"]) if r["rows_read"] else None,
            )
            for r in csv.DictReader(rows)
        ]


def chart(points: Sequence[Point], limit_gb: float | None) -> str:
    """Time, the largest statement's memory and the engine process's peak against fills (millions),
    one line per engine and kind of run, the linear extrapolation of the full runs from 20M dotted."""

    points = medians(points)

    def series(value: str) -> list[plot.Series]:
        out = []
        for engine in ENGINES:
            for kind in KINDS:
                xy = [
                    (p.fills / 1e6, v if value == "seconds" else v * MB / 1e9)
                    for p in points
                    if p.engine == engine and p.kind == kind and (v := getattr(p, value)) is not None
                ]
                if xy:
                    out.append(plot.Series(f"{kind}, {engine}", xy))
        return out

    times = series("seconds")
    for engine in ENGINES:
        base = [p for p in points if p.engine == engine and p.kind == "full" and p.fills == REFERENCE_SIZE]
        top = max((p.fills for p in points), default=0)
        if base and top > REFERENCE_SIZE:
            per_fill = base[0].seconds / base[0].fills
            times.append(plot.Series(f"full, {engine}: linear from 20M", [(0, 0), (top / 1e6, per_fill * top)], True))
    limits = [plot.Limit(f"max_memory_usage {limit_gb:g} GB", limit_gb)] if limit_gb else []
    panels = [
        plot.Panel("Run time", "fills (millions)", "seconds", times),
        plot.Panel("Largest statement's memory (served)", "fills (millions)", "GB", series("query_peak_mb"), limits),
        plot.Panel("Engine process's peak resident set", "fills (millions)", "GB", series("process_peak_mb")),
    ]
    return plot.svg(
        panels, f"tablerefresh on the reference workload: full runs and incremental runs ({CHANGED}% changed)"
    )


if __name__ == "__main__":
    main()
