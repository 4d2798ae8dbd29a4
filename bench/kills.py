"""Kill soak: SIGKILL ``tablerefresh refresh`` processes at uniformly random instants, and check the promises.

    .venv/bin/python -m bench.kills [--trials 50] [--fills 20000] [--strategy ReplacePartitions|Exchange]
                                    [--lock-ttl 2] [--measure 3] [--seed N] [--data-dir DIR]
                                    [--swap-window SECONDS] [--server | --server-crash]

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
mixed state (docs/failures.md, "A killed Job and a crashed server"); the next run must still repair it.

chDB runs one engine per process and one process per data path, so every step that touches the
engine runs in a process of its own (``bench/kills_engine.py``), never beside a refresh process.
Prints the counts and the time taken; exits 1 if any promise failed.

Where the engine lives, and what is killed:

- by default, the embedded engine: each refresh process holds it, and the kill hits both;
- ``--server``: one served engine (``bench/server.py``: chDB's engine behind ClickHouse's own HTTP,
  in a process of its own; no replication, no query log), whose clients the refresh processes are,
  with a password user, as a Job is. The kill hits the client only, and the server runs on the
  statement it was running: the soak waits until the server runs no statement of the refresh
  processes' user (how long is reported), copies the target as it is then (checked afterwards),
  and starts the recovery run at once, as the next Job may. That run meets the dead run's lock
  while its TTL has not passed: it must exit 3 and change nothing (counted), and runs again after
  the TTL (at most 4 runs in all);
- ``--server-crash``: the same server, SIGKILLed at the instant instead (the engine with it), and
  started again at once on the same data directory and ports, as a supervisor would; the refresh
  process lives on, may reconnect, and ends as it will (its exit code and reason are tabulated,
  and must be honest: 0 only with the new rows, a changed target never "nothing changed"). A plain
  MergeTree's multi-partition replace is not crash-atomic, so a crash inside the swap may leave a
  mixed state: counted (a partition half done, or whole partitions some old and some new), not a
  broken promise, but the next run must repair it. A mixed state after a crash anywhere else is.
"""

from __future__ import annotations

import argparse
import contextlib
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

from bench.server import BenchServer

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

EMBEDDED, SERVER, SERVER_CRASH = "embedded", "server", "server-crash"
MODES = (EMBEDDED, SERVER, SERVER_CRASH)
_LOCK_HELD = 3  # tablerefresh refresh: another run holds the lock (nothing changed)
_FAILED_AFTER_SWAP = 7
# Exit codes that say the spec, the data or the target's state refused the run: a crash is none of these.
_BLAMES_INPUT = (2, 4, 5, 8)
_RECOVERY_ATTEMPTS = 4  # runs after a kill: the first may meet the dead run's lock, the next ones not
_CLIENT_LIMIT = 300.0  # seconds a client may go on after its server crashed before the soak kills it


def in_swap(step: str) -> bool:
    """Whether a run that last logged ``step`` was inside its swap statement."""
    return step == "exchange tables" or re.fullmatch(r"swap N partition\(s\)", step) is not None


class SoakError(RuntimeError):
    """The soak could not judge: its set-up, a calibration run or the checker failed."""


@dataclass
class Tally:
    trials: int = 0
    old: int = 0  # killed before the swap: the target held the old rows
    new: int = 0  # killed after the swap: the target held the new rows
    finished: int = 0  # the run ended before its kill instant (it must have left the new rows)
    mixed: int = 0
    half_done: int = 0  # mixed, with a partition neither old nor new (e.g. a new part beside its old one)
    split: int = 0  # mixed, each partition whole but some old and some new
    reruns_ok: int = 0  # recoveries that ended with exit 0 and the new rows
    failed_runs: int = 0  # runs that failed by themselves, before their kill instant
    leftovers: int = 0  # trials after whose rerun a staging, lock or takeover table stood
    skipped: int = 0  # the window's month changed during the trial
    lock_waits: int = 0  # trials whose first recovery run met the dead run's lock (exit 3)
    still_running: int = 0  # --server: trials where the server ran the killed client's statement on
    drains: list[float] = field(default_factory=list)  # --server: how long it ran on, each such trial
    restarts: list[float] = field(default_factory=list)  # --server-crash: seconds until the server answered again
    delays: list[float] = field(default_factory=list)  # seconds from each killed run's end to its first recovery
    outcomes: Counter[tuple[int, str, str]] = field(default_factory=Counter)  # crash: (exit, reason, state)
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
    at: float  # the kill instant, seconds after the run started (or after it logged its swap)
    killed: bool  # whether the kill came while the run was running (else it had ended)
    code: int  # the run's exit: -9 killed; after a server crash, what the run itself said
    step: str  # the last step it logged before the kill
    after: dict[str, Any]  # the engine's check after the kill
    month: str  # the window's month when the trial's rows were computed
    reruns: list[int]  # exit codes of the recovery runs, in order: 3 while the dead run's lock held
    rerun_seconds: float  # the last recovery run's wall time
    rerun_output: str
    final: dict[str, Any]  # the engine's check after the last recovery run
    log: str
    summary: dict[str, Any] = field(default_factory=dict)  # the killed run's JSON summary, if it wrote one
    drain: float | None = 0.0  # --server: seconds the server ran the killed client's statements on
    restart: float | None = None  # --server-crash: seconds until the restarted server answered
    waits_changed: list[str] = field(default_factory=list)  # a recovery run that exited 3 changed the target
    delay: float = 0.0  # seconds from the killed run's end (its kill; after a crash, its exit) to the first recovery

    @property
    def rerun(self) -> int:
        return self.reruns[-1]


def judge(tally: Tally, seen: Observation, mode: str = EMBEDDED) -> list[str]:
    """Count what a trial saw; the promises it broke.

    A server crash inside the swap may leave a mixed state (a plain MergeTree's multi-partition
    replace is not crash-atomic): counted, and the next run must repair it; anywhere else, and after
    any kill of a client, a mixed state breaks a promise. After a server crash the run's own exit
    code must be honest: 0 only with the new rows, a changed target never reported as untouched, and
    the crash never blamed on the input or the data (exit 2, 4, 5 or 8)."""
    tally.trials += 1
    problems = []
    if not seen.killed and seen.code != 0:
        tally.failed_runs += 1
        problems.append(f"the run failed by itself with exit {seen.code} before its kill")
    if seen.drain is None:
        problems.append("the server still ran the killed client's statements after the soak's limit")
    elif seen.drain > 0:
        tally.still_running += 1
        tally.drains.append(seen.drain)
    if seen.restart is not None:
        tally.restarts.append(seen.restart)
    if seen.killed:
        tally.delays.append(seen.delay)
    if seen.final["month"] != seen.month:
        tally.skipped += 1
        return problems  # other rows than the ones computed may be right: nothing else to judge
    state = seen.after["state"]
    tally.steps[(seen.step, state)] += 1
    crashed = mode == SERVER_CRASH and seen.killed
    if crashed:
        said = seen.summary.get("reason") or seen.summary.get("outcome") or "(no summary)"
        tally.outcomes[(seen.code, str(said), state)] += 1
    if state == "mixed":
        tally.mixed += 1
        partitions = seen.after.get("partitions") or {}
        if partitions.get("neither"):
            tally.half_done += 1
        else:
            tally.split += 1
        if not (crashed and in_swap(seen.step)):
            problems.append(f"mixed state: vs old {seen.after['vsOld']}; vs new {seen.after['vsNew']}")
    elif not seen.killed:
        tally.finished += 1
        if state != "new":
            problems.append(f"the run ended before its kill, yet the target holds the {state} rows")
    elif state == "old":
        tally.old += 1
    else:
        tally.new += 1
    if crashed:
        if seen.code == 0 and state != "new":
            problems.append(f"the run exited 0 after the crash, yet the target holds the {state} rows")
        if state != "old" and seen.code not in (0, _FAILED_AFTER_SWAP):
            problems.append(f"the target holds the {state} rows, yet the run exited {seen.code} (nothing changed)")
        if seen.code in _BLAMES_INPUT:
            problems.append(
                f"after its server crashed the run exited {seen.code} ({seen.summary.get('reason', '')}), blaming "
                f"its input or data: {str(seen.summary.get('error', ''))[:300]}"
            )
    if seen.reruns[0] == _LOCK_HELD:
        tally.lock_waits += 1
    problems += [f"a recovery run that exited 3 changed the target: {change}" for change in seen.waits_changed]
    if seen.rerun == 0 and seen.final["state"] == "new":
        tally.reruns_ok += 1
    else:
        problems.append(
            f"the recovery runs exited {seen.reruns} and left the {seen.final['state']} rows "
            f"(vs new: {seen.final['vsNew']}):\n{seen.rerun_output[-3000:]}"
        )
    if seen.final["leftovers"]:
        tally.leftovers += 1
        problems.append(f"left after the rerun: {', '.join(seen.final['leftovers'])}")
    return problems


def summary_of(log: str) -> dict[str, Any]:
    """The JSON summary a run printed last, if it printed one."""
    for line in reversed(log.splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                found: dict[str, Any] = json.loads(line)
                return found
    return {}


class Soak:
    """The trials' steps. ``mode``: ``embedded`` (the engine in each refresh process), ``server``
    (the refresh processes are clients of one served engine; the kill hits a client) or
    ``server-crash`` (the kill hits the served engine, which is then restarted)."""

    def __init__(self, data_dir: Path, strategy: str, lock_ttl: float, mode: str = EMBEDDED) -> None:
        self.data_dir, self.strategy, self.lock_ttl, self.mode = data_dir, strategy, lock_ttl, mode
        self.logs = data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.server: BenchServer | None = None
        if mode != EMBEDDED:
            self.server = BenchServer(data_dir / "chdb")

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()

    def engine(self, **request: Any) -> dict[str, Any]:
        """One engine step: in a process of its own (``bench/kills_engine.py``) on the embedded
        engine, in this one, a client, on a server."""
        if self.server is not None:
            from bench import kills_engine

            return kills_engine.quietly(self.data_dir, request, self.server)
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
        env = dict(self.server.env() if self.server is not None else os.environ)
        env.pop("TABLEREFRESH_FAILPOINT", None)
        command = [
            sys.executable,
            "-m",
            "tablerefresh",
            "refresh",
            "-f",
            str(self.data_dir / "manifest.yaml"),
            "--lock-ttl",
            str(self.lock_ttl),
        ]
        if self.server is not None:
            command += ["--clickhouse", self.server.url]
        with open(log, "wb") as out:
            process = subprocess.Popen(command, cwd=_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        return process, log

    def trial(
        self, i: int, at: float, month: str, next_change: int | None, from_swap: bool = False
    ) -> tuple[Observation, dict[str, Any]]:
        """Kill a run (or its server) ``at`` seconds after its start (or after it logs its swap),
        check; run it again until it is not met by the dead run's lock, check, and prepare the next
        change."""
        name = f"trial-{i}"
        process, log = self.start(name)
        while from_swap and process.poll() is None and not _SWAP_STEP.search(log.read_text()):
            time.sleep(0.0005)
        restart: float | None = None
        drain: float | None = 0.0
        try:
            code = process.wait(timeout=at)
            killed = False
        except subprocess.TimeoutExpired:
            killed = True
            if self.mode == SERVER_CRASH:
                assert self.server is not None
                logged = log.read_text()  # the run goes on logging after the crash
                self.server.crash()
                step = last_step(logged)
                # Restarted at once, on the same data and ports, as a supervisor would: the run, still
                # alive, may reconnect to it and find out what its last statement did.
                try:
                    restart = self.server.restart()
                except Exception as exc:
                    process.kill()
                    process.wait()
                    raise SoakError(f"the server did not start again after its crash: {exc}") from exc
                try:
                    code = process.wait(timeout=_CLIENT_LIMIT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    code = process.wait()
            else:
                process.send_signal(signal.SIGKILL)
                code = process.wait()
                step = last_step(log.read_text())
        killed_at = time.monotonic()
        text = log.read_text()
        if not killed:
            step = "ended" if code == 0 else last_step(text)
        reruns: list[int] = []
        waits_changed: list[str] = []
        if self.server is None:
            # Embedded: check, then the next run once the dead run's lock is older than its TTL.
            after = self.engine(check=True)["check"]
            time.sleep(max(0.0, killed_at + self.lock_ttl + 0.5 - time.monotonic()))
        else:
            # A killed client's statement runs on in the server: wait until it ends, and copy the
            # target as it is then. The next run starts at once, as the next Job may; it meets the
            # dead run's lock until the TTL has passed (exit 3, and the target as the copy), and runs
            # again after the TTL. The copy is checked afterwards.
            drain = self.server.drain()
            self.engine(snapshot=True)
        delay = time.monotonic() - killed_at
        for attempt in range(_RECOVERY_ATTEMPTS):
            rerun, seconds, output = self.run(f"{name}-rerun" + (f"-{attempt}" if attempt else ""))
            reruns.append(rerun)
            if rerun != _LOCK_HELD or attempt == _RECOVERY_ATTEMPTS - 1:
                break
            changed = self.engine(unchanged=True)["unchanged"] if self.server is not None else None
            if changed is not None:
                waits_changed.append(changed)
            time.sleep(max(self.lock_ttl / 2, killed_at + self.lock_ttl + 0.5 - time.monotonic()))
        request: dict[str, Any] = {"check": True}
        if self.server is not None:
            request["checkSnapshot"] = True
        if next_change is not None:
            request["prepare"] = next_change
        answer = self.engine(**request)
        if self.server is not None:
            after = answer["checkSnapshot"]
        seen = Observation(
            i,
            at,
            killed,
            code,
            step,
            after,
            month,
            reruns,
            seconds,
            output,
            answer["check"],
            log.name,
            summary=summary_of(text) if killed else {},
            drain=drain,
            restart=restart,
            waits_changed=waits_changed,
            delay=delay,
        )
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
    mode: str = EMBEDDED,
    say: Callable[[str], None] = print,
) -> Tally:
    """Set up the workload, measure D, run ``trials`` trials; what every trial found.

    With ``swap_window``, each instant is drawn in [0, swap_window] from the moment the run logs its
    swap instead: a look at the milliseconds that uniform instants almost never reach."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    s = Soak(data_dir, strategy, lock_ttl, mode)
    try:
        return _soak(s, trials, fills, strategy, lock_ttl, measure, seed, swap_window, say)
    finally:
        s.close()


def _soak(
    s: Soak,
    trials: int,
    fills: int,
    strategy: str,
    lock_ttl: float,
    measure: int,
    seed: int | None,
    swap_window: float | None,
    say: Callable[[str], None],
) -> Tally:
    rows = s.engine(setup={"fills": fills, "strategy": strategy})["setup"]["rows"]
    where = f"; served engine at {s.server.url}, pid {s.server.pid}" if s.server is not None else ""
    say(f"{fills:,} fills, {rows:,} target rows, strategy {strategy}, lock TTL {lock_ttl:g}s, mode {s.mode}{where}")
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
        if seen.reruns == [0]:
            durations.append(seen.rerun_seconds)
        problems = judge(tally, seen, s.mode)
        verdict = "; ".join(problems) or "ok"
        if seen.final["month"] != seen.month:
            verdict = f"skipped: the window's month changed ({seen.month} -> {seen.final['month']}); {verdict}"
        say(f"trial {i}: {_describe(seen)}; {verdict}")
        tally.problems += [f"trial {i} (killed at {seen.at:.2f}s, {seen.step}; {seen.log}): {p}" for p in problems]
        if "error" in next_prepared:
            tally.problems.append(f"the soak stopped after trial {i}: {next_prepared['error']}")
            say(tally.problems[-1])
            break
        prepared = next_prepared
    return tally


def _describe(seen: Observation) -> str:
    what = f"kill at {seen.at:.3f}s, {seen.step}"
    if seen.restart is not None:
        said = seen.summary.get("reason") or seen.summary.get("outcome") or ""
        what += f", server back in {seen.restart:.1f}s, run exit {seen.code} {said}".rstrip()
        if seen.summary.get("error"):
            what += f" ({str(seen.summary['error'])[:160]})"
    if seen.drain:
        what += f", server ran its statement {seen.drain:.2f}s on"
    what += f": {seen.after['state']} rows"
    parts = seen.after.get("partitions") or {}
    if parts:
        what += f" (partitions old {parts['old']}, new {parts['new']}, half done {parts['neither']})"
    return f"{what}; recovery exits {seen.reruns} ({seen.rerun_seconds:.1f}s)"


def _prepared(answer: dict[str, Any]) -> dict[str, Any]:
    prepared: dict[str, Any] = answer["prepare"]
    if "error" in prepared:
        raise SoakError(prepared["error"])
    return prepared


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}s" for v in values)


def report(
    tally: Tally,
    seconds: float,
    swap_window: float | None = None,
    say: Callable[[str], None] = print,
    mode: str = EMBEDDED,
) -> None:
    killed = "crashed the server" if mode == SERVER_CRASH else "killed"
    lines = [
        ("trials", tally.trials),
        (f"{killed} before the swap (old rows)", tally.old),
        (f"{killed} after the swap (new rows)", tally.new),
        ("ended before the kill (new rows)", tally.finished),
        ("mixed states", tally.mixed),
        ("  with a partition half done", tally.half_done),
        ("  with whole partitions, some old, some new", tally.split),
        ("runs that failed by themselves", tally.failed_runs),
        ("recoveries met by the dead run's lock (exit 3)", tally.lock_waits),
        ("failed recoveries", tally.trials - tally.skipped - tally.reruns_ok),
        ("recoveries that succeeded with the new rows", tally.reruns_ok),
        ("trials with leftover staging/lock/takeover", tally.leftovers),
        ("skipped (the window's month changed)", tally.skipped),
    ]
    if mode == SERVER:
        lines.insert(7, ("server still ran the killed client's statement", tally.still_running))
    if swap_window is not None:
        say(f"\nkill instants uniform in [0, {swap_window:g}s] after the run logged its swap")
    elif tally.horizons:
        low, high = min(tally.horizons), max(tally.horizons)
        say(f"\nkill instants uniform in [0, D], D from {low:.2f}s to {high:.2f}s (median of the last unkilled runs)")
    for label, value in lines:
        say(f"{label:<50}{value:>6}")
    if tally.delays:
        say(
            f"the first recovery run started {min(tally.delays):.1f}s to {max(tally.delays):.1f}s after the killed "
            f"run ended (median {statistics.median(tally.delays):.1f}s): it meets the dead run's lock within the TTL"
        )
    if tally.drains:
        say(
            f"the server ran a killed client's statement on for {min(tally.drains):.2f}s to "
            f"{max(tally.drains):.2f}s (median {statistics.median(tally.drains):.2f}s)"
        )
    if tally.restarts:
        say(
            f"the server answered again {min(tally.restarts):.1f}s to {max(tally.restarts):.1f}s after its crash "
            f"(median {statistics.median(tally.restarts):.1f}s)"
        )
    say("\nwhere the kills landed (the last step the run logged): old / new / mixed")
    for step in sorted(
        {s for s, _ in tally.steps}, key=lambda s: -sum(n for (t, _), n in tally.steps.items() if t == s)
    ):
        counts = [tally.steps[(step, state)] for state in ("old", "new", "mixed")]
        say(f"  {step:<52}{counts[0]:>4} /{counts[1]:>4} /{counts[2]:>4}")
    if tally.outcomes:
        say("\nwhat the run said after its server crashed: exit code, reason -> rows left (trials)")
        for (code, reason, state), n in sorted(tally.outcomes.items(), key=lambda kv: (-kv[1], kv[0])):
            say(f"  exit {code:<3} {reason:<28} -> {state:<6}{n:>4}")
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
    parser.add_argument("--trials", type=int, default=50, help="N, the number of kills")
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
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--server",
        action="store_true",
        help="the refresh processes are clients of one served engine; SIGKILL the client",
    )
    where.add_argument(
        "--server-crash",
        action="store_true",
        help="the refresh processes are clients of one served engine; SIGKILL the server, then restart it",
    )
    args = parser.parse_args()
    mode = SERVER if args.server else SERVER_CRASH if args.server_crash else EMBEDDED
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
                mode=mode,
            )
        except SoakError as exc:
            print(f"the soak could not judge: {exc}", file=sys.stderr)
            sys.exit(2)
        report(tally, time.monotonic() - started, args.swap_window, mode=mode)
    sys.exit(1 if tally.failed else 0)


if __name__ == "__main__":
    main()
