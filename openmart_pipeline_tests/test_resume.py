"""Never paying twice: killed runs, runs at once, and forced refreshes.

Runs are real `openmart-pipeline run` processes against the emulator; a kill is SIGKILL,
which the process cannot catch, so what survives is only what the ledger had written.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from openmart_pipeline.emulator import EmulatorConfig, running_emulator
from openmart_pipeline.ledger import Ledger
from openmart_pipeline.lookups import (
    BatchRunReport,
    Lookup,
    RunSettings,
    lookup_id_for,
    plan_lookups,
    run_batches,
)
from openmart_pipeline.resources.openmart import OpenmartClient
from openmart_pipeline_tests.conftest import (
    FAST,
    FINAL,
    TEST_KEY,
    Workspace,
    accepted_domains,
    at_once,
    company_table,
    wait_for,
)

COMPANIES = 450  # five batches


@pytest.mark.parametrize("kills_after", [1, 3], ids=["after_1_submission", "after_3"])
def test_killed_run_is_resumed_without_paying_twice(kills_after: int, tmp_path: Path):
    # A 0.5 s hold: the kill lands while the next submission is held by the server.
    config = EmulatorConfig(time_scale=0.02, api_keys=frozenset({TEST_KEY}))
    with running_emulator(config) as emulator:
        workspace = Workspace(tmp_path, emulator.base_url)
        workspace.add_table("companies.csv", company_table(COMPANIES, "resumeco"))
        single = {"OPENMART_MAX_SUBMISSIONS_IN_FLIGHT": "1"}

        process = workspace.start(**single)
        accepted_count = lambda: emulator.state.stats()["submissions_accepted"]  # noqa: E731
        wait_for(lambda: accepted_count() >= kills_after, process)
        process.send_signal(signal.SIGKILL)
        process.wait()
        time.sleep(config.hold_seconds * config.time_scale * 2)  # let the held one finish
        accepted_before_rerun = len(accepted_domains(emulator))

        rerun = workspace.run(**single)
        again = workspace.run(**single)
        accepted = Counter(accepted_domains(emulator))

    assert accepted_before_rerun >= kills_after * 100
    lookups = rerun.domain_lookups
    assert len(lookups) == COMPANIES and lookups["tracking_id"].is_unique
    assert set(accepted.values()) == {1}, "a lookup was bought twice"
    assert set(lookups["status"]) <= FINAL | {"submit_unknown"}
    unknown = lookups[lookups["status"] == "submit_unknown"]
    # At most the one submission that was held by the server when the run died.
    assert len(unknown) <= 100
    if len(unknown):
        assert rerun.returncode == 1 and "submit_unknown" in rerun.output
    finished = set(lookups.loc[lookups["status"].isin(FINAL), "domain"])
    assert finished == set(accepted) - set(unknown["domain"])
    assert len(finished) + len(unknown) == COMPANIES
    assert len(again.domain_lookups) == COMPANIES
    assert (again.domain_lookups["status"] == "submit_unknown").sum() == len(unknown)


def test_two_runs_at_once_buy_each_lookup_once(tmp_path: Path):
    config = EmulatorConfig(time_scale=0.01, api_keys=frozenset({TEST_KEY}))
    with running_emulator(config) as emulator:
        workspace = Workspace(tmp_path, emulator.base_url)
        workspace.add_table("companies.csv", company_table(COMPANIES, "resumeco"))
        runs = at_once(
            {
                name: lambda name=name: workspace.run(DAGSTER_HOME=str(tmp_path / f"home_{name}"))
                for name in ("a", "b")
            }
        )
        accepted = Counter(accepted_domains(emulator))

    assert runs["a"].returncode == 0, runs["a"].output
    assert runs["b"].returncode == 0, runs["b"].output
    assert len(accepted) == COMPANIES and set(accepted.values()) == {1}
    lookups = runs["b"].domain_lookups
    assert len(lookups) == COMPANIES and set(lookups["status"]) <= FINAL


def test_force_refresh_sends_everything_once_more(tmp_path: Path):
    config = EmulatorConfig(time_scale=FAST, api_keys=frozenset({TEST_KEY}))
    with running_emulator(config) as emulator:
        workspace = Workspace(tmp_path, emulator.base_url)
        workspace.add_table("companies.csv", company_table(120, "resumeco"))

        first = workspace.run()
        refreshed = workspace.run("--force-refresh")
        accepted = Counter(accepted_domains(emulator))

    assert first.returncode == 0 and refreshed.returncode == 0, refreshed.output
    assert len(accepted) == 120 and set(accepted.values()) == {2}
    assert not refreshed.domain_lookups["carried_over"].any()
    before = set(first.domain_lookups["batch_id"])
    assert not before & set(refreshed.domain_lookups["batch_id"])


def test_duplicate_rows_share_one_lookup_and_each_keeps_its_row(tmp_path: Path):
    config = EmulatorConfig(time_scale=FAST, api_keys=frozenset({TEST_KEY}))
    table = pd.DataFrame(
        {
            "company_name": ["Acme", "Acme", "ACME ", "Other"],
            "website": [
                "https://acme-dup.com",
                "http://www.acme-dup.com/jobs",
                "acme-dup.com",
                "other-dup.com",
            ],
        }
    )
    with running_emulator(config) as emulator:
        workspace = Workspace(tmp_path, emulator.base_url)
        workspace.add_table("first.csv", table)
        workspace.add_table("second.csv", table.iloc[[0]])

        run = workspace.run()
        accepted = Counter(accepted_domains(emulator))

    assert run.returncode == 0, run.output
    assert accepted == {"acme-dup.com": 1, "other-dup.com": 1}
    lookups = run.domain_lookups
    assert len(lookups) == 5 and lookups["tracking_id"].is_unique
    acme = lookups[lookups["domain"] == "acme-dup.com"]
    assert acme["lookup_id"].nunique() == 1 and acme["task_id"].nunique() == 1
    emails = run.company_emails
    per_row = emails.groupby("tracking_id").size()
    for row in acme.itertuples():
        assert per_row.get(row.tracking_id, 0) == row.mailbox_count


def test_a_retried_step_adopts_what_its_first_attempt_submitted(tmp_path: Path):
    config = EmulatorConfig(time_scale=FAST, api_keys=frozenset({TEST_KEY}))
    names = [(f"retryco{i}.com", f"Retry {i}") for i in range(150)]
    lookups = [Lookup(lookup_id_for(d, n, None, None, None), d, n) for d, n in names]
    settings = RunSettings(poll_interval_seconds=0.05)
    with running_emulator(config) as emulator:
        ledger = Ledger(tmp_path / "ledger.sqlite")
        plan = plan_lookups(ledger, lookups, settings, run_id="run-1")

        async def attempt() -> BatchRunReport:
            # What a Dagster retry of submit_and_wait does: the same batches once more.
            client = OpenmartClient(
                api_key=TEST_KEY, base_url=emulator.base_url, reads_per_second=500
            )
            async with client:
                return await run_batches(client, ledger, plan.work, settings, log=lambda _: None)

        first = asyncio.run(attempt())
        second = asyncio.run(attempt())
        accepted = Counter(accepted_domains(emulator))

    assert first.batches_submitted == 2
    assert second.batches_submitted == 0 and second.batches_adopted == 2
    assert len(accepted) == 150 and set(accepted.values()) == {1}
    assert {result.status for result in second.results.values()} <= FINAL
