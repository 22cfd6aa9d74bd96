"""`make bench`: throughput of `openmart-pipeline run` against the emulator, ten times faster.

Each case starts a fresh emulator (time scale 0.1: the 26 s hold lasts 2.6 s, a task at most
1 s, reads limited to 200 per second, the real API's ratios) and runs the pipeline exactly
as a user does: the `openmart-pipeline run` command in a subprocess, with its own
DAGSTER_HOME, domain table and output folder, configured only by environment variables.

For N lookups in B = ceil(N / 100) batches with C submissions in flight, no client can
finish sooner than

    bound = max(ceil(B / C) * hold + task_time, N / read_rate)

The table compares the Dagster run's wall time (from the run's stats in the instance) with
that bound, and reports the speed-up of C = 8 over C = 1, the peak memory of the run's and
the emulator's process trees, and the client's CPU time per 1,000 lookups. A second run
over the same table reuses every result and sends nothing; its CPU time is the fixed cost
of a run (interpreter, Dagster, reading and writing the tables) and is subtracted in the
"start-up excluded" column.

Usage:
    .venv/bin/python benchmarks/run_benchmarks.py           # N = 2,000 and 10,000
    .venv/bin/python benchmarks/run_benchmarks.py --quick   # N = 500 smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import psutil

from openmart_pipeline.demo import free_port, wait_until_listening

BENCH_KEY = "bench-key"
TIME_SCALE = 0.1
HOLD_SECONDS = 26.0 * TIME_SCALE
MAX_TASK_SECONDS = 10.0  # before scaling: a task is ready at most 1 s after acceptance
TASK_SECONDS = MAX_TASK_SECONDS * TIME_SCALE
READS_PER_SECOND = 200.0
POLL_INTERVAL_SECONDS = 0.2  # the real default of 2 s, scaled
BATCH_SIZE = 100
SAMPLE_SECONDS = 0.1
EMULATOR_STARTUP_SECONDS = 30.0
RUN_TIMEOUT_SECONDS = 300.0

FULL_CASES = ((2000, 1), (2000, 8), (10000, 8))
QUICK_CASES = ((500, 1), (500, 8))

TARGET_EFFICIENCY = 0.8
TARGET_SPEEDUP = 5.0
TARGET_PEAK_RSS = 1024**3
TARGET_CPU_PER_1000 = 1.0

# Final outcomes of a collected lookup; anything else means a lookup was not worked to the end.
COLLECTED = frozenset({"found", "not_found", "errored", "cancelled"})


@dataclass
class ProcessMeasure:
    """What one process tree cost: wall time, CPU time, peak memory."""

    returncode: int | None = None
    wall: float = 0.0
    cpu: float = 0.0
    peak_rss: int = 0


@dataclass
class CaseResult:
    """Measurements and checks of one (N, C) case."""

    n: int
    c: int
    first: ProcessMeasure
    rerun: ProcessMeasure
    run_wall: float | None
    emulator_rss: int
    stats: dict
    other_cores: float = 0.0
    emulator_cpu: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def bound(self) -> float:
        batches = math.ceil(self.n / BATCH_SIZE)
        held = math.ceil(batches / self.c) * HOLD_SECONDS + TASK_SECONDS
        return max(held, self.n / READS_PER_SECOND)

    @property
    def cpu_per_1000(self) -> float:
        return self.first.cpu / self.n * 1000

    @property
    def cpu_per_1000_excluding_startup(self) -> float:
        return (self.first.cpu - self.rerun.cpu) / self.n * 1000


class PeakSampler(threading.Thread):
    """Samples a process tree's resident memory every SAMPLE_SECONDS; keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_rss = 0
        self._done = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._done.is_set():
            self.peak_rss = max(self.peak_rss, _tree_rss(root))
            self._done.wait(SAMPLE_SECONDS)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak_rss


def _tree_rss(root: psutil.Process) -> int:
    total = 0
    try:
        members = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def _busy_seconds() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def _cpu(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def companies(n: int) -> pd.DataFrame:
    """N made-up companies, each at its own registrable domain."""
    return pd.DataFrame(
        {
            "company_name": [f"Bench Company {i} of {n}" for i in range(n)],
            "website": [f"https://www.co{i}x{n}.com/" for i in range(n)],
        }
    )


def pipeline_command() -> list[str]:
    """The command a user types, from this interpreter's environment."""
    script = Path(sys.executable).parent / "openmart-pipeline"
    if script.exists():
        return [str(script), "run"]
    return [sys.executable, "-m", "openmart_pipeline.cli", "run"]


def run_measured(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> ProcessMeasure:
    """Run a command to the end; its wall time, its tree's CPU time and peak memory."""
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=out)
    sampler = PeakSampler(process.pid)
    sampler.start()
    # wait4 (not Popen.wait) gives the child's rusage, which includes every descendant it
    # waited for: the CPU time of the whole tree, measured by the kernel.
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return ProcessMeasure(
        returncode=process.returncode,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_rss=sampler.stop(),
    )


def dagster_run_walls(home: Path) -> list[float]:
    """Wall time of each run in the Dagster instance at `home`, oldest first."""
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        stats = [instance.get_run_stats(run.run_id) for run in instance.get_runs()]
    timed = sorted((s.start_time, s.end_time) for s in stats if s.start_time and s.end_time)
    return [end - start for start, end in timed]


def start_emulator(port: int, log: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "openmart_pipeline.cli",
        "emulator",
        "--port",
        str(port),
        "--time-scale",
        str(TIME_SCALE),
        "--read-rate-limit",
        str(READS_PER_SECOND),
        "--max-task-seconds",
        str(MAX_TASK_SECONDS),
        "--api-key",
        BENCH_KEY,
    ]
    with log.open("w") as out:
        # The access log goes to a file: an unread pipe would fill and stall the server.
        return subprocess.Popen(command, stdout=out, stderr=out)


def run_case(n: int, c: int, root: Path) -> CaseResult:
    """Start an emulator, run the pipeline twice over N companies, and check the outcome."""
    folder = root / f"n{n}_c{c}"
    (folder / "domains").mkdir(parents=True)
    (folder / "dagster_home").mkdir()
    companies(n).to_csv(folder / "domains" / "companies.csv", index=False)

    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMART_")}
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env.update(
        OPENMART_API_KEY=BENCH_KEY,
        OPENMART_BASE_URL=base_url,
        OPENMART_DOMAINS_PATH=str(folder / "domains"),
        OPENMART_OUTPUT_PATH=str(folder / "output"),
        DAGSTER_HOME=str(folder / "dagster_home"),
        OPENMART_MAX_SUBMISSIONS_IN_FLIGHT=str(c),
        OPENMART_READS_PER_SECOND=str(int(READS_PER_SECOND)),
        OPENMART_POLL_INTERVAL_SECONDS=str(POLL_INTERVAL_SECONDS),
    )

    emulator = start_emulator(port, folder / "emulator.log")
    emulator_sampler = PeakSampler(emulator.pid)
    try:
        wait_until_listening(base_url, emulator, EMULATOR_STARTUP_SECONDS)
        emulator_sampler.start()
        command = pipeline_command()
        before = _busy_seconds(), _own_cpu(), _cpu(emulator.pid)
        first = run_measured(command, env, folder, folder / "run.log")
        after = _busy_seconds(), _own_cpu(), _cpu(emulator.pid)
        stats = httpx.get(f"{base_url}/_emulator/stats", timeout=30.0).json()
        rerun = run_measured(command, env, folder, folder / "rerun.log")
        after_rerun = httpx.get(f"{base_url}/_emulator/stats", timeout=30.0).json()
    finally:
        emulator.terminate()
        emulator.wait(timeout=15)
    emulator_rss = emulator_sampler.stop() if emulator_sampler.is_alive() else 0

    walls = dagster_run_walls(folder / "dagster_home")
    result = CaseResult(
        n=n,
        c=c,
        first=first,
        rerun=rerun,
        run_wall=walls[0] if walls else None,
        emulator_rss=emulator_rss,
        stats=stats,
    )
    # CPU the machine spent on anything but this case while it ran: other processes
    # competing for the same cores make every number above worse.
    spent = [end - start for start, end in zip(before, after, strict=True)]
    result.emulator_cpu = spent[2]
    result.other_cores = max(0.0, spent[0] - spent[1] - spent[2] - first.cpu) / first.wall
    result.problems = check_case(result, folder, after_rerun)
    return result


def check_case(result: CaseResult, folder: Path, after_rerun: dict) -> list[str]:
    """Everything that would make the case's numbers meaningless, in a few words each."""
    problems = []
    n, stats = result.n, result.stats
    if result.first.returncode != 0:
        problems.append(f"run exit {result.first.returncode} (see {folder / 'run.log'})")
    if result.rerun.returncode != 0:
        problems.append(f"rerun exit {result.rerun.returncode}")
    if stats["tasks_accepted"] != n:
        problems.append(f"emulator accepted {stats['tasks_accepted']} tasks, not {n}")
    if after_rerun["tasks_accepted"] != stats["tasks_accepted"]:
        problems.append("rerun sent lookups again")
    if stats["max_submissions_in_flight"] > result.c:
        problems.append(f"{stats['max_submissions_in_flight']} submissions in flight")
    if stats["reads_rate_limited"]:
        problems.append(f"{stats['reads_rate_limited']} reads answered 429")
    table = folder / "output" / "domain_lookups"
    lookups = pd.read_parquet(table) if table.exists() else pd.DataFrame({"status": []})
    if len(lookups) != n:
        problems.append(f"domain_lookups has {len(lookups)} rows, not {n}")
    uncollected = int((~lookups["status"].isin(COLLECTED)).sum())
    if uncollected:
        problems.append(f"{uncollected} rows not collected")
    if result.run_wall is None:
        problems.append("no Dagster run stats")
    return problems


def speedups(results: list[CaseResult]) -> dict[tuple[int, int], float]:
    """Run wall at C = 1 over run wall at the same N, for every case with a C = 1 partner."""
    serial = {r.n: r.run_wall for r in results if r.c == 1 and r.run_wall}
    return {
        (r.n, r.c): serial[r.n] / r.run_wall
        for r in results
        if r.c != 1 and r.n in serial and r.run_wall
    }


def targets(result: CaseResult, speedup: float | None, largest_n: int) -> str:
    """The targets this case is judged on, each with pass or miss."""
    marks = []

    def mark(name: str, ok: bool) -> None:
        marks.append(f"{name} {'pass' if ok else 'MISS'}")

    if result.c > 1 and result.n == largest_n and result.run_wall:
        mark(f"eff>={TARGET_EFFICIENCY}", result.bound / result.run_wall >= TARGET_EFFICIENCY)
        mark("RSS<1GiB", result.first.peak_rss < TARGET_PEAK_RSS)
    if speedup is not None:
        mark(f"x>={TARGET_SPEEDUP:g}", speedup >= TARGET_SPEEDUP)
    if result.c > 1:
        mark(
            f"CPU<={TARGET_CPU_PER_1000:g}s",
            result.cpu_per_1000_excluding_startup <= TARGET_CPU_PER_1000,
        )
    return "; ".join(marks) or "-"


def mib(size: int) -> str:
    return f"{size / 1024**2:.0f}"


def print_table(results: list[CaseResult]) -> None:
    ups = speedups(results)
    largest_n = max(r.n for r in results if r.c > 1)
    header = (
        "N",
        "C",
        "cmd wall s",
        "run wall s",
        "bound s",
        "eff",
        "speed-up",
        "RSS run MiB",
        "RSS emu MiB",
        "CPU s/1k",
        "CPU s/1k -start",
        "in flight",
        "reads/s max",
        "other load",
        "checks",
        "targets",
    )
    rows = []
    for r in results:
        speedup = ups.get((r.n, r.c))
        rows.append(
            (
                f"{r.n:,}",
                str(r.c),
                f"{r.first.wall:.1f}",
                f"{r.run_wall:.1f}" if r.run_wall else "?",
                f"{r.bound:.1f}",
                f"{r.bound / r.run_wall:.2f}" if r.run_wall else "?",
                f"{speedup:.2f}x" if speedup else "-",
                mib(r.first.peak_rss),
                mib(r.emulator_rss),
                f"{r.cpu_per_1000:.2f}",
                f"{r.cpu_per_1000_excluding_startup:.2f}",
                str(r.stats["max_submissions_in_flight"]),
                str(r.stats["max_reads_in_any_second"]),
                f"{r.other_cores:.2f} cores",
                "ok" if not r.problems else "WARN: " + ", ".join(r.problems),
                targets(r, speedup, largest_n),
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def print_legend(results: list[CaseResult]) -> None:
    print(
        "\ncmd wall: the whole `openmart-pipeline run` command (interpreter, imports, Dagster "
        "run, summary).\nrun wall: the Dagster run alone (start to end in the instance's run "
        "stats); eff = bound / run wall;\n  speed-up = run wall at C = 1 / run wall at the same "
        "N.\nRSS: peak resident memory of the process tree, sampled every "
        f"{SAMPLE_SECONDS} s.\nCPU s/1k: user + system CPU of the run's process tree per "
        "1,000 lookups; '-start' subtracts\n  the CPU of a second run over the same table, "
        "which reuses every result and sends nothing.\n"
        "other load: CPU used by other processes on the machine during the first run, in "
        "cores; above ~0.1 the\n  case competed for the CPU and its times are pessimistic.\n"
        "bound is the stated lower bound; no read can start before the first hold ends, so "
        "hold + N / read rate\n  is a floor too (N=2,000: 12.6 s; N=10,000: 52.6 s)."
    )
    for r in results:
        print(
            f"  N={r.n:,} C={r.c}: first run {r.first.cpu:.1f} s CPU, rerun (0 lookups) "
            f"{r.rerun.cpu:.1f} s CPU in {r.rerun.wall:.1f} s; emulator reads "
            f"{r.stats['reads']:,} using {r.emulator_cpu:.1f} s CPU, submissions "
            f"{r.stats['submissions_accepted']}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 500 only: a smoke run")
    parser.add_argument("--keep", action="store_true", help="keep the case folders")
    args = parser.parse_args(argv)
    cases = QUICK_CASES if args.quick else FULL_CASES

    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {os.cpu_count()} logical cores ({psutil.cpu_count(logical=False)} "
        f"physical), {psutil.virtual_memory().total / 1024**3:.1f} GiB, "
        f"{platform.platform()}, Python {platform.python_version()}"
    )
    print(
        f"pipeline: {shlex.join(pipeline_command())} with OPENMART_READS_PER_SECOND="
        f"{READS_PER_SECOND:g} OPENMART_POLL_INTERVAL_SECONDS={POLL_INTERVAL_SECONDS} "
        "OPENMART_MAX_SUBMISSIONS_IN_FLIGHT=C"
    )
    print(
        f"emulator: time scale {TIME_SCALE} (hold {HOLD_SECONDS:.1f} s, task <= "
        f"{TASK_SECONDS:.1f} s), read limit {READS_PER_SECOND:g}/s; "
        "bound = max(ceil(B/C) * hold + task, N / read rate)\n",
        flush=True,
    )

    root = Path(tempfile.mkdtemp(prefix="openmart-bench-"))
    results = []
    try:
        for n, c in cases:
            print(f"running N={n:,} C={c} ...", file=sys.stderr, flush=True)
            results.append(run_case(n, c, root))
    finally:
        if args.keep:
            print(f"case folders kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    print_table(results)
    print_legend(results)
    if args.quick:
        print("\n--quick: targets are set for N = 2,000 and 10,000; these marks are indicative.")
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
