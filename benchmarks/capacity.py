"""Capacity of the lookup pipeline at the API's limits, for 10,000 to 1,000,000 companies a month.

Pure arithmetic, no network: every figure printed is computed here from the assumptions
below, so changing a limit (`--read-rate`, `--in-flight`, `--hold`, `--pool-limit`,
`--rows-per-run`) changes the table and the conclusions together.

For N lookups in B = ceil(N / 100) batches, with C submissions in flight per run and k runs
allowed in the `openmart_api` pool at once (C_total = C * k), no deployment can finish
sooner than

    wall >= max(ceil(B / C_total) * hold + task_time, reads / read_rate)

where reads counts every read the client makes (one per task, one task-ID list per batch,
and the status polls). The read rate is an account limit: k runs share it (each runs with
OPENMART_READS_PER_SECOND = read_rate / k), so more runs never raise it.

Usage:
    python benchmarks/capacity.py
    python benchmarks/capacity.py --read-rate 40 --in-flight 4 --pool-limit 2
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

# --- The API (unofficial figures: Openmart documents no rate limits and no price) ---------
# Most tasks one submission may carry (documented: 1 to 100).
BATCH_SIZE = 100
# How long the server holds a submission before answering (documented as about 26 s).
HOLD_SECONDS = 26.0
# Longest time a task takes once its batch is accepted: an assumption (the emulator's upper
# bound); the API documents none.
TASK_SECONDS = 10.0
# Reads (status, task-ID list, task) per second for the whole account: about 20/s is what
# third-party catalogues report.
READ_RATE = 20.0
# Submissions per second, as reported by the same catalogues; compared, not binding here.
SUBMIT_RATE = 25.0
# Credits per lookup, as an upper bound: the API is said to charge "a fraction of a credit
# per email returned", so one credit per lookup overstates the cost of any lookup that
# finds fewer than a whole credit's worth of mailboxes.
CREDITS_PER_LOOKUP = 1.0

# --- The package's defaults ------------------------------------------------------------
# OPENMART_MAX_SUBMISSIONS_IN_FLIGHT: submissions one run keeps held at once.
IN_FLIGHT_PER_RUN = 8
# concurrency.pools.default_limit in deploy/dagster.yaml: runs calling the API at once.
POOL_LIMIT = 1
# Rows per domain table (one partition, one run): an example size for a monthly split.
ROWS_PER_RUN = 10_000
# batches_per_step in the run config: batches one submit_and_wait step works at once.
BATCHES_PER_STEP = 100
# The status poll schedule of openmart_pipeline/lookups.py: first wait
# OPENMART_POLL_INTERVAL_SECONDS, growing by half each time, capped at 15 s.
POLL_FIRST_SECONDS = 2.0
POLL_GROWTH = 1.5
POLL_MAX_SECONDS = 15.0

# --- The question ------------------------------------------------------------------------
COMPANIES_PER_MONTH = (10_000, 100_000, 1_000_000)
MONTH_SECONDS = 30 * 24 * 3600.0


@dataclass(frozen=True)
class Limits:
    """The limits one table is computed for."""

    read_rate: float
    in_flight: int
    hold: float
    pool_limit: int
    rows_per_run: int


@dataclass(frozen=True)
class Capacity:
    """What N lookups a month cost at the given limits."""

    lookups: int
    batches: int
    runs: int
    steps: int
    in_flight_needed: int
    in_flight_used: int
    reads: int
    task_reads_seconds: float
    submit_side_seconds: float
    read_side_seconds: float
    bound_seconds: float
    steps_in_turn_seconds: float
    credits: float

    @property
    def binding(self) -> str:
        return "reads" if self.read_side_seconds >= self.submit_side_seconds else "submissions"


def polls_per_batch(task_seconds: float) -> int:
    """Status reads of one batch from its submission's answer until its tasks are done.

    The first poll comes at once, then after each wait of the growing schedule; the poll
    that finds the batch ready counts too. It is an upper estimate: when reads queue behind
    the rate limit, the waits stretch and fewer polls fit in the task time.
    """
    polls, elapsed, wait = 1, 0.0, POLL_FIRST_SECONDS
    while elapsed < task_seconds:
        elapsed += wait
        polls += 1
        wait = min(wait * POLL_GROWTH, POLL_MAX_SECONDS)
    return polls


def reads_for(batches: int, lookups: int) -> int:
    """Every read N lookups cost: polls and one task-ID list per batch, one read per task."""
    return batches * (polls_per_batch(TASK_SECONDS) + 1) + lookups


def step_bound(batches: int, lookups: int, limits: Limits) -> float:
    """Least time one submit_and_wait step can take, reading at its share of the rate.

    No read can start before the step's first submission is answered, so the read side
    begins one hold in.
    """
    own_rate = limits.read_rate / limits.pool_limit
    submit_side = math.ceil(batches / limits.in_flight) * limits.hold + TASK_SECONDS
    read_side = limits.hold + reads_for(batches, lookups) / own_rate
    return max(submit_side, read_side)


def step_sizes(lookups: int, limits: Limits) -> list[tuple[int, int]]:
    """(batches, lookups) of every submit_and_wait step when N is split into runs."""
    sizes = []
    for start in range(0, lookups, limits.rows_per_run):
        run_lookups = min(limits.rows_per_run, lookups - start)
        step_lookups = BATCHES_PER_STEP * BATCH_SIZE
        for step_start in range(0, run_lookups, step_lookups):
            in_step = min(step_lookups, run_lookups - step_start)
            sizes.append((math.ceil(in_step / BATCH_SIZE), in_step))
    return sizes


def capacity(lookups: int, limits: Limits) -> Capacity:
    """The capacity figures for N lookups a month."""
    batches = math.ceil(lookups / BATCH_SIZE)
    steps = step_sizes(lookups, limits)
    # Only as many runs as there are steps can hold submissions at once.
    in_flight_used = limits.in_flight * min(limits.pool_limit, len(steps))
    reads = reads_for(batches, lookups)
    reads_per_batch = reads / batches

    # Each slot hands back one batch per hold; the reads absorb read_rate / reads_per_batch
    # batches a second. Fewer slots than this leave the read rate idle.
    needed = math.ceil(limits.hold * limits.read_rate / reads_per_batch)

    submit_side = math.ceil(batches / in_flight_used) * limits.hold + TASK_SECONDS
    read_side = reads / limits.read_rate

    # Steps share the pool: k at a time, each at read_rate / k, one after another per slot.
    bounds = sorted((step_bound(b, n, limits) for b, n in steps), reverse=True)
    in_turn = sum(bounds[i] for i in range(0, len(bounds), limits.pool_limit))

    return Capacity(
        lookups=lookups,
        batches=batches,
        runs=math.ceil(lookups / limits.rows_per_run),
        steps=len(steps),
        in_flight_needed=min(needed, batches),
        in_flight_used=in_flight_used,
        reads=reads,
        task_reads_seconds=lookups / limits.read_rate,
        submit_side_seconds=submit_side,
        read_side_seconds=read_side,
        bound_seconds=max(submit_side, read_side),
        steps_in_turn_seconds=in_turn,
        credits=lookups * CREDITS_PER_LOOKUP,
    )


def duration(seconds: float) -> str:
    """A duration in the largest unit that keeps it readable."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def table(rows: list[Capacity]) -> list[str]:
    """The capacity table as markdown lines."""
    columns = (
        "companies / month",
        "batches",
        "runs (steps)",
        "in flight needed / used",
        "reads",
        "task reads alone",
        "wall bound",
        "steps in turn",
        "month used",
        "binding",
        "credits (at most)",
    )
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        lines.append(
            f"| {row.lookups:,} | {row.batches:,} | {row.runs:,} ({row.steps:,}) "
            f"| {row.in_flight_needed} / {row.in_flight_used} | {row.reads:,} "
            f"| {duration(row.task_reads_seconds)} | {duration(row.bound_seconds)} "
            f"| {duration(row.steps_in_turn_seconds)} "
            f"| {row.steps_in_turn_seconds / MONTH_SECONDS:.2%} | {row.binding} "
            f"| {row.credits:,.0f} |"
        )
    return lines


def conclusions(rows: list[Capacity], limits: Limits) -> list[str]:
    """Plain statements drawn from the computed rows."""
    largest = rows[-1]
    polls = polls_per_batch(TASK_SECONDS)
    reads_per_lookup = largest.reads / largest.lookups
    seconds_per_lookup = largest.steps_in_turn_seconds / largest.lookups
    month_lookups = MONTH_SECONDS / seconds_per_lookup
    submit_rate = largest.in_flight_used / limits.hold
    read_bound = [row for row in rows if row.binding == "reads"]
    own_rate = limits.read_rate / limits.pool_limit
    tail = largest.steps_in_turn_seconds / largest.bound_seconds - 1

    lines = [
        f"- Each batch costs {polls} status polls (task time up to {TASK_SECONDS:g} s, polls "
        f"every {POLL_FIRST_SECONDS:g}-{POLL_MAX_SECONDS:g} s), 1 task-ID list and "
        f"{BATCH_SIZE} task reads: {reads_per_lookup:.2f} reads per lookup.",
    ]
    if len(read_bound) == len(rows):
        lines.append(
            f"- The read rate binds in every row: {largest.in_flight_needed} submissions in "
            f"flight keep {limits.read_rate:g} reads/s busy and {largest.in_flight_used} are "
            "used, so more submissions in flight or more runs in the pool do not shorten the "
            "wall; only a higher account read rate does."
        )
    else:
        short = next(row for row in rows if row.binding == "submissions")
        lines.append(
            f"- Submissions bind in {len(rows) - len(read_bound)} of {len(rows)} rows: at "
            f"{short.lookups:,} lookups, {short.in_flight_used} in flight is fewer than the "
            f"{short.in_flight_needed} that keep {limits.read_rate:g} reads/s busy; raise "
            "OPENMART_MAX_SUBMISSIONS_IN_FLIGHT to reach the read bound."
        )
    lines += [
        f"- What breaks first as N grows is the {largest.binding} side, and the wall grows "
        f"linearly with N. {largest.lookups:,} lookups need "
        f"{duration(largest.task_reads_seconds)} of task reads alone, "
        f"{duration(largest.read_side_seconds)} of reads with polls and lists, "
        f"{duration(largest.submit_side_seconds)} of submissions, and "
        f"{duration(largest.steps_in_turn_seconds)} as {largest.steps:,} steps in turn "
        f"({limits.pool_limit} at a time, {own_rate:g} reads/s each; {tail:.1%} above the "
        "wall bound, since each step pays its own first hold and last tasks).",
        f"- Next, the month: at these limits, steps in turn fit about "
        f"{month_lookups / 1e6:.1f} million lookups in 30 days; beyond that a month's "
        "lookups cannot be finished within the month.",
        f"- Submissions run at {submit_rate:.2f}/s ({largest.in_flight_used} held for "
        f"{limits.hold:g} s each), {submit_rate / SUBMIT_RATE:.1%} of the reported "
        f"{SUBMIT_RATE:g}/s.",
        f"- Credits grow linearly: at most {largest.credits:,.0f} for {largest.lookups:,} "
        f"lookups at {CREDITS_PER_LOOKUP:g} credit per lookup (an upper bound; the API is "
        "said to charge a fraction of a credit per email returned and publishes no price).",
        f"- {largest.runs:,} runs of {limits.rows_per_run:,} rows each: a run's memory is set "
        "by its partition's rows, not by N, so more companies mean more runs, not bigger pods.",
    ]
    return lines


def parse_args(argv: list[str] | None = None) -> Limits:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--read-rate",
        type=float,
        default=READ_RATE,
        help="account-wide reads per second (default %(default)s)",
    )
    parser.add_argument(
        "--in-flight",
        type=int,
        default=IN_FLIGHT_PER_RUN,
        help="submissions in flight per run (default %(default)s)",
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=HOLD_SECONDS,
        help="seconds the server holds a submission (default %(default)s)",
    )
    parser.add_argument(
        "--pool-limit",
        type=int,
        default=POOL_LIMIT,
        help="runs calling the API at once (default %(default)s)",
    )
    parser.add_argument(
        "--rows-per-run",
        type=int,
        default=ROWS_PER_RUN,
        help="rows per domain table, one run each (default %(default)s)",
    )
    args = parser.parse_args(argv)
    for name in ("read_rate", "in_flight", "hold", "pool_limit", "rows_per_run"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be greater than 0")
    return Limits(
        read_rate=args.read_rate,
        in_flight=args.in_flight,
        hold=args.hold,
        pool_limit=args.pool_limit,
        rows_per_run=args.rows_per_run,
    )


def main(argv: list[str] | None = None) -> None:
    limits = parse_args(argv)
    rows = [capacity(n, limits) for n in COMPANIES_PER_MONTH]
    print(
        f"Limits: {limits.read_rate:g} reads/s for the account, {limits.in_flight} submissions "
        f"in flight per run, {limits.pool_limit} run(s) in the pool, hold {limits.hold:g} s, "
        f"task time up to {TASK_SECONDS:g} s, {limits.rows_per_run:,} rows per run, "
        f"{BATCHES_PER_STEP} batches per step."
    )
    print()
    print("\n".join(table(rows)))
    print()
    print("\n".join(conclusions(rows, limits)))


if __name__ == "__main__":
    main()
