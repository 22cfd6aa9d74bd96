"""Throughput: a run overlaps its submissions and keeps its reads under the configured rate.

The pipeline runs as a user runs it (the CLI in a subprocess) against the emulator on
loopback; the emulator's counters, not the clock, say what happened. Nothing here is
timed: `benchmarks/run_benchmarks.py` measures speed.
"""

from __future__ import annotations

import pandas as pd
import pytest

from openmart_pipeline.emulator import EmulatorConfig, running_emulator
from openmart_pipeline_tests.conftest import TEST_KEY, Workspace

# 26 s * 0.02 = 0.52 s: each submission is held long enough for the next ones to arrive
# while it waits, and tasks are ready at most 0.2 s after acceptance.
OVERLAP_TIME_SCALE = 0.02
COLLECTED = {"found", "not_found", "errored", "cancelled"}


def made_up_companies(count: int, tag: str) -> pd.DataFrame:
    """`count` companies, each at its own made-up registrable domain."""
    return pd.DataFrame(
        {
            "company_name": [f"Throughput {tag} Company {i}" for i in range(count)],
            "website": [f"https://co{i}x{tag}.com/" for i in range(count)],
        }
    )


@pytest.fixture
def held_emulator():
    """The emulator with a ~0.5 s submission hold and no read limit of its own."""
    config = EmulatorConfig(time_scale=OVERLAP_TIME_SCALE, api_keys=frozenset({TEST_KEY}))
    with running_emulator(config) as running:
        yield running


def assert_every_row_collected(run, count: int) -> None:
    assert run.returncode == 0, run.output
    lookups = run.domain_lookups
    assert lookups is not None, run.output
    assert len(lookups) == count
    assert lookups["tracking_id"].is_unique
    assert set(lookups["status"]) <= COLLECTED, lookups["status"].value_counts()


def test_submissions_overlap_up_to_the_configured_bound(tmp_path, held_emulator):
    count, in_flight = 600, 3
    workspace = Workspace(tmp_path, held_emulator.base_url)
    workspace.add_table("companies.csv", made_up_companies(count, "overlap"))

    run = workspace.run(OPENMART_MAX_SUBMISSIONS_IN_FLIGHT=str(in_flight))

    assert_every_row_collected(run, count)
    stats = held_emulator.state.stats()
    assert stats["tasks_accepted"] == count
    assert stats["submissions_accepted"] == count // 100
    assert 1 < stats["max_submissions_in_flight"] <= in_flight


def test_reads_stay_within_the_configured_rate(tmp_path, held_emulator):
    count, rate = 300, 50
    workspace = Workspace(tmp_path, held_emulator.base_url)
    workspace.add_table("companies.csv", made_up_companies(count, "rate"))

    run = workspace.run(OPENMART_READS_PER_SECOND=str(rate))

    assert_every_row_collected(run, count)
    stats = held_emulator.state.stats()
    assert stats["tasks_accepted"] == count
    # Every task is read once, so the reads span several seconds at the limit.
    assert stats["reads"] >= count
    assert stats["max_reads_in_any_second"] <= rate
