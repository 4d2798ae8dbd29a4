"""Kill soak: SIGKILL ``tablerefresh refresh`` processes at uniformly random instants, and check the promises.

    .venv/bin/python -m bench.kills [--trials 50] [--fills 20000] [--strategy ReplacePartitions|Exchange]
                                    [--lock-ttl 2] [--measure 3] [--seed N] [--data-dir DIR]
                                    [--swap-window SECONDS]

Generates the reference workload (``examples/polymarket``) on the embedded engine and builds the
table's whole history. Then each trial:

1. changes the source (new trades in open markets under new transaction hashes, and one market
   resolves, so rows move from the open partition to this month's), and stores two sets of rows:
   ``old``, what the target holds now, and ``new``, what a run must leave: the target's rows outside
   the slice as they are, plus the source query's rows for the window. ``new`` is computed from the
   source query directly, not by a run, so it owes nothing to staging, carry-over or swap code; the
   step refuses a trial whose ``new`` equals its ``old``;
2. starts ``tablerefresh refresh -f MANIFEST --lock-ttl T`` and SIGKILLs it at an instant drawn
   uniformly in [0, D], counted from its start. D is the median wall time, measured the same way, of
   the last ``--measure`` unkilled runs on the same data: runs made before the first trial (each must
   leave exactly its ``new`` rows, which checks the checker), then the trials' reruns, so that D
   follows the load of a shared machine. A run that ended before its instant is counted as ended;
3. compares the target with ``old`` and ``new`` by the manifest's ``uniqueKey``, floats within the
   reference's tolerance (``rel_tol=1e-6, abs_tol=1e-9``): it must hold exactly one of them. A key
   standing twice, a missing or extra key, or a value that matches neither is a mixed state;
4. once the dead run's lock is older than its TTL, runs the refresh to its end: it must exit 0 and
   leave exactly ``new``, with no staging, lock or takeover table beside the target (backups and the
   runs table may stay).

``new`` is only right for the window it was computed for. The reference query and predicate read the
window only through ``toStartOfMonth(window_start)``, so every run inside one month builds the same
rows; a trial over which that month changes (around midnight UTC starting a month's second day) is
reported as skipped rather than judged. Exchange rebuilds the whole table, so it runs the reference
query with a window reaching back past the first resolution, as the history run does. DeleteInsert
is not atomic by design and is left out.

Uniform instants almost never land in the milliseconds of the swap itself. ``--swap-window W``
looks there instead: each kill comes within [0, W] after the run logs its swap. On chDB the engine
lives in the run's process, so such a kill is an engine crash inside the ALTER, which can leave a
mixed state (README, "When the engine dies inside the swap"); the next run must still repair it.

chDB runs one engine per process and one process per data path, so every step that touches the
engine runs in a process of its own (``bench/kills_engine.py``), never beside a refresh process.
Prints the counts and the time taken; exits 1 if any promise failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STRATEGIES = ("ReplacePartitions", "Exchange")
REL_TOL, ABS_TOL = 1e-6, 1e-9  # the reference's tolerance (tests/test_polymarket_refresh.py)
_ROOT = Path(__file__).resolve().parent.parent

Row = tuple[Any, ...]


# -- comparing tables ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rows:
    """A table's rows, with the positions of its unique key and of its float columns."""

    columns: tuple[str, ...]
    key: tuple[int, ...]
    floats: frozenset[int]
    rows: list[Row]

    def by_key(self) -> dict[Row, list[Row]]:
        keyed: dict[Row, list[Row]] = {}
        for row in self.rows:
            keyed.setdefault(tuple(row[i] for i in self.key), []).append(row)
        return keyed

    def duplicate_keys(self) -> list[Row]:
        return sorted((k for k, rows in self.by_key().items() if len(rows) > 1), key=repr)


def same_value(a: Any, b: Any, is_float: bool) -> bool:
    if is_float and isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    return bool(a == b)


def difference(actual: Rows, expected: Rows) -> str | None:
    """None when ``actual`` holds exactly ``expected``'s rows, one per unique key (floats within the
    tolerance); otherwise what differs, with an example of each kind."""
    if actual.columns != expected.columns:
        return f"other columns: {actual.columns} != {expected.columns}"
    got, want = actual.by_key(), expected.by_key()
    problems = []
    twice = actual.duplicate_keys()
    if twice:
        problems.append(f"{len(twice)} key(s) stand more than once, e.g. {twice[0]}")
    missing, extra = sorted(want.keys() - got.keys(), key=repr), sorted(got.keys() - want.keys(), key=repr)
    if missing:
        problems.append(f"{len(missing)} key(s) missing, e.g. {missing[0]}")
    if extra:
        problems.append(f"{len(extra)} key(s) extra, e.g. {extra[0]}")
    changed = []
    for key in sorted(got.keys() & want.keys(), key=repr):
        a, e = got[key][0], want[key][0]
        columns = [actual.columns[i] for i in range(len(a)) if not same_value(a[i], e[i], i in actual.floats)]
        if columns:
            changed.append((key, columns))
    if changed:
        key, columns = changed[0]
        problems.append(f"{len(changed)} row(s) with other values, e.g. {key}: {', '.join(columns)}")
    return "; ".join(problems) or None


# -- where a kill landed -------------------------------------------------------------------------

_SWAP_STEP = re.compile(r": (swap \d+ partition\(s\)|exchange tables) \.\.\.$", re.MULTILINE)
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ [A-Z]+ tablerefresh[\w.]*: (.*)$")
_PHASES = (
    (re.compile(r"^lock .* taken by .*$"), "lock taken"),
    (re.compile(r"^lock .* released$"), "lock released"),
    (re.compile(r"^run .* succeeded in .*$"), "run succeeded"),
    (re.compile(r"^(.*) done in [\d.]+s$"), r"\1 done"),
    (re.compile(r"^(.*) \.\.\.$"), r"\1"),
)


def last_step(log: str) -> str:
    """The last step a run logged: where it was when it died ("start-up" before its first line)."""
    step = "start-up"
    for line in log.splitlines():
        m = _LOG_LINE.match(line)
        if not m:
            continue
        for pattern, label in _PHASES:
            if pattern.match(m.group(1)):
                step = re.sub(r"\b\d+\b", "N", pattern.sub(label, m.group(1)))
                break
    return step


# -- the soak ------------------------------------------------------------------------------------


class SoakError(RuntimeError):
    """The soak could not judge: its set-up, a calibration run or the checker failed."""


@dataclass
class Tally:
    trials: int = 0
    old: int = 0  # killed before the swap: the target held the old rows
    new: int = 0  # killed after the swap: the target held the new rows
    finished: int = 0  # the run ended before its kill instant (it must have left the new rows)
    mixed: int = 0
    reruns_ok: int = 0
    failed_runs: int = 0  # runs that failed by themselves, before their kill instant
    leftovers: int = 0  # trials after whose rerun a staging, lock or takeover table stood
    skipped: int = 0  # the window's month changed during the trial
    steps: Counter[tuple[str, str]] = field(default_factory=Counter)  # (last step logged, state)
    problems: list[str] = field(default_factory=list)
    horizons: list[float] = field(default_factory=list)  # D of each trial

    @property
    def failed(self) -> bool:
        return bool(self.problems)


@dataclass(frozen=True)
class Observation:
    """What one trial saw."""

    trial: int
    at: float  # the kill instant, seconds after the run started
    code: int  # the killed run's exit: -9 killed, 0 ended before the instant, else failed by itself
    step: str  # the last step it logged
    after: dict[str, Any]  # the engine's check after the kill
    month: str  # the window's month when the trial's rows were computed
    rerun: int  # the next run's exit code
    rerun_seconds: float
    rerun_output: str
    final: dict[str, Any]  # the engine's check after the next run
    log: str


def judge(tally: Tally, seen: Observation) -> list[str]:
    """Count what a trial saw; the promises it broke."""
    tally.trials += 1
    problems = []
    if seen.code not in (0, -signal.SIGKILL):
        tally.failed_runs += 1
        problems.append(f"the run failed by itself with exit {seen.code} before its kill")
    if seen.final["month"] != seen.month:
        tally.skipped += 1
        return problems  # other rows than the ones computed may be right: nothing else to judge
    state = seen.after["state"]
    tally.steps[(seen.step, state)] += 1
    if state == "mixed":
        tally.mixed += 1
        problems.append(f"mixed state: vs old {seen.after['vsOld']}; vs new {seen.after['vsNew']}")
    elif seen.code == 0:
        tally.finished += 1
        if state != "new":
            problems.append(f"the run ended before its kill, yet the target holds the {state} rows")
    elif state == "old":
        tally.old += 1
    else:
        tally.new += 1
    if seen.rerun == 0 and seen.final["state"] == "new":
        tally.reruns_ok += 1
    else:
        problems.append(
            f"the rerun exited {seen.rerun} and left the {seen.final['state']} rows "
            f"(vs new: {seen.final['vsNew']}):\n{seen.rerun_output[-3000:]}"
        )
    if seen.final["leftovers"]:
        tally.leftovers += 1
        problems.append(f"left after the rerun: {', '.join(seen.final['leftovers'])}")
    return problems


class Soak:
    def __init__(self, data_dir: Path, strategy: str, lock_ttl: float) -> None:
        self.data_dir, self.strategy, self.lock_ttl = data_dir, strategy, lock_ttl
        self.logs = data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def engine(self, **request: Any) -> dict[str, Any]:
        """One engine step, in a process of its own (``bench/kills_engine.py``)."""
        done = subprocess.run(
            [sys.executable, "-m", "bench.kills_engine", str(self.data_dir), json.dumps(request)],
            cwd=_ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            raise SoakError(f"engine step {request} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return answer

    def start(self, name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.logs / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if k != "TABLEREFRESH_FAILPOINT"}
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tablerefresh",
                    "refresh",
                    "-f",
                    str(self.data_dir / "manifest.yaml"),
                    "--lock-ttl",
                    str(self.lock_ttl),
                ],
                cwd=_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return process, log

    def trial(
        self, i: int, at: float, month: str, next_change: int | None, from_swap: bool = False
    ) -> tuple[Observation, dict[str, Any]]:
        """Kill a run ``at`` seconds after its start (or after it logs its swap), check; rerun it, check
        and prepare the next change."""
        name = f"trial-{i}"
        process, log = self.start(name)
        while from_swap and process.poll() is None and not _SWAP_STEP.search(log.read_text()):
            time.sleep(0.0005)
        try:
            code = process.wait(timeout=at)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            code = process.wait()
        killed = time.monotonic()
        step = "ended" if code == 0 else last_step(log.read_text())
        after = self.engine(check=True)["check"]  # while the dead run's lock ages
        # The next run, once the dead run's lock is older than its TTL.
        time.sleep(max(0.0, killed + self.lock_ttl + 0.5 - time.monotonic()))
        rerun, seconds, output = self.run(f"{name}-rerun")
        request: dict[str, Any] = {"check": True}
        if next_change is not None:
            request["prepare"] = next_change
        answer = self.engine(**request)
        seen = Observation(i, at, code, step, after, month, rerun, seconds, output, answer["check"], log.name)
        return seen, answer.get("prepare", {})

    def run(self, name: str) -> tuple[int, float, str]:
        """A refresh run to its end: exit code, wall seconds, log."""
        started = time.monotonic()
        process, log = self.start(name)
        code = process.wait()
        return code, time.monotonic() - started, log.read_text()


def soak(
    data_dir: Path,
    *,
    trials: int,
    fills: int,
    strategy: str = "ReplacePartitions",
    lock_ttl: float = 2.0,
    measure: int = 3,
    seed: int | None = None,
    swap_window: float | None = None,
    say: Callable[[str], None] = print,
) -> Tally:
    """Set up the workload, measure D, run ``trials`` trials; what every trial found.

    With ``swap_window``, each instant is drawn in [0, swap_window] from the moment the run logs its
    swap instead: a look at the milliseconds that uniform instants almost never reach."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}")
    s = Soak(data_dir, strategy, lock_ttl)
    rows = s.engine(setup={"fills": fills, "strategy": strategy})["setup"]["rows"]
    say(f"{fills:,} fills, {rows:,} target rows, strategy {strategy}, lock TTL {lock_ttl:g}s")
    prepared = _prepared(s.engine(prepare=0))

    # D: unkilled runs on the same data, timed as the killed ones are. Each must leave the new rows.
    durations = []
    for k in range(measure):
        code, seconds, output = s.run(f"measure-{k}")
        if code != 0:
            raise SoakError(f"unkilled run {k} exited {code}:\n{output[-3000:]}")
        durations.append(seconds)
        answer = s.engine(check=True, prepare=k + 1)
        if answer["check"]["state"] != "new":
            raise SoakError(f"unkilled run {k} did not leave the new rows: {answer['check']}")
        prepared = _prepared(answer)
    say(f"unkilled runs took {_seconds(durations)}")

    tally = Tally()
    rng = random.Random(seed)
    for i in range(trials):
        next_change = measure + 1 + i if i + 1 < trials else None
        # D follows the machine's load: the median of the last unkilled runs, reruns included.
        horizon = swap_window if swap_window is not None else statistics.median(durations[-measure:])
        tally.horizons.append(horizon)
        seen, next_prepared = s.trial(
            i, rng.uniform(0, horizon), prepared["month"], next_change, from_swap=swap_window is not None
        )
        if seen.rerun == 0:
            durations.append(seen.rerun_seconds)
        problems = judge(tally, seen)
        verdict = "; ".join(problems) or "ok"
        if seen.final["month"] != seen.month:
            verdict = f"skipped: the window's month changed ({seen.month} -> {seen.final['month']}); {verdict}"
        say(
            f"trial {i}: kill at {seen.at:.3f}s of {horizon:.3f}s, {seen.step}: {seen.after['state']} rows; "
            f"rerun exit {seen.rerun} in {seen.rerun_seconds:.1f}s; {verdict}"
        )
        tally.problems += [f"trial {i} (killed at {seen.at:.2f}s, {seen.step}; {seen.log}): {p}" for p in problems]
        if "error" in next_prepared:
            tally.problems.append(f"the soak stopped after trial {i}: {next_prepared['error']}")
            say(tally.problems[-1])
            break
        prepared = next_prepared
    return tally


def _prepared(answer: dict[str, Any]) -> dict[str, Any]:
    prepared: dict[str, Any] = answer["prepare"]
    if "error" in prepared:
        raise SoakError(prepared["error"])
    return prepared


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}s" for v in values)


def report(tally: Tally, seconds: float, swap_window: float | None = None, say: Callable[[str], None] = print) -> None:
    lines = [
        ("trials", tally.trials),
        ("killed before the swap (old rows)", tally.old),
        ("killed after the swap (new rows)", tally.new),
        ("ended before the kill (new rows)", tally.finished),
        ("mixed states", tally.mixed),
        ("runs that failed by themselves", tally.failed_runs),
        ("reruns that succeeded with the new rows", tally.reruns_ok),
        ("trials with leftover staging/lock/takeover", tally.leftovers),
        ("skipped (the window's month changed)", tally.skipped),
    ]
    if swap_window is not None:
        say(f"\nkill instants uniform in [0, {swap_window:g}s] after the run logged its swap")
    elif tally.horizons:
        low, high = min(tally.horizons), max(tally.horizons)
        say(f"\nkill instants uniform in [0, D], D from {low:.2f}s to {high:.2f}s (median of the last unkilled runs)")
    for label, value in lines:
        say(f"{label:<44}{value:>6}")
    say("\nwhere the kills landed (the last step the run logged): old / new / mixed")
    for step in sorted(
        {s for s, _ in tally.steps}, key=lambda s: -sum(n for (t, _), n in tally.steps.items() if t == s)
    ):
        counts = [tally.steps[(step, state)] for state in ("old", "new", "mixed")]
        say(f"  {step:<52}{counts[0]:>4} /{counts[1]:>4} /{counts[2]:>4}")
    per = seconds / tally.trials if tally.trials else 0.0
    say(f"\ntook {seconds:.0f}s ({per:.1f}s a trial)")
    if tally.failed:
        say(f"\n{len(tally.problems)} PROMISE(S) FAILED:")
        for problem in tally.problems:
            say(f"  {problem}")
    else:
        say("every promise held")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--fills", type=int, default=20_000)
    parser.add_argument("--strategy", choices=STRATEGIES, default="ReplacePartitions")
    parser.add_argument("--lock-ttl", type=float, default=2.0, help="passed to each refresh (seconds)")
    parser.add_argument("--measure", type=int, default=3, help="unkilled runs whose median duration is D")
    parser.add_argument("--seed", type=int, help="seed of the kill instants (default: random)")
    parser.add_argument("--data-dir", type=Path, help="chDB path and logs (default: a temporary directory)")
    parser.add_argument(
        "--swap-window",
        type=float,
        metavar="SECONDS",
        help="kill within SECONDS after the run logs its swap, instead of uniformly over its whole run",
    )
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tablerefresh-kills-") as tmp:
        data_dir = args.data_dir or Path(tmp)
        try:
            tally = soak(
                data_dir,
                trials=args.trials,
                fills=args.fills,
                strategy=args.strategy,
                lock_ttl=args.lock_ttl,
                measure=args.measure,
                seed=args.seed,
                swap_window=args.swap_window,
            )
        except SoakError as exc:
            print(f"the soak could not judge: {exc}", file=sys.stderr)
            sys.exit(2)
        report(tally, time.monotonic() - started, args.swap_window)
    sys.exit(1 if tally.failed else 0)


if __name__ == "__main__":
    main()
