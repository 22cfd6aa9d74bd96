"""The fault matrix: the whole pipeline against the emulator, once per kind of API failure.

For each fault: every input row appears exactly once in domain_lookups with the promised
status; the emulator accepted each lookup at most once; the API key (a canary) appears in
no captured log, Dagster event log or output file; the exit status and message are the
promised ones.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from openmart_pipeline.emulator import EmulatorConfig, FaultConfig, running_emulator
from openmart_pipeline_tests.conftest import (
    FAST,
    FINAL,
    Workspace,
    accepted_domains,
    company_table,
    wait_for,
)

CANARY_KEY = "canary-key-7d1e5b"
BANNED_KEY = "banned-key-93ac0f"
COMPANIES = 250  # three batches: 100, 100, 50
FAST_RETRIES = {"OPENMART_RETRY_INITIAL_SECONDS": "0.02", "OPENMART_READ_TIMEOUT_SECONDS": "0.5"}


@dataclass
class Case:
    """One fault and what the run must do about it."""

    faults: dict[str, dict[str, float]] = field(default_factory=dict)
    statuses: set[str] = field(default_factory=lambda: set(FINAL))
    returncode: int = 0
    message: str | None = None
    accepted: str = "each once"  # or "none"
    api_key: str = CANARY_KEY
    config: dict = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


READ_ENDPOINTS = ("status", "task_ids", "task")


def on_reads(kind: str, rate: float) -> dict[str, dict[str, float]]:
    return {endpoint: {kind: rate} for endpoint in READ_ENDPOINTS}


CASES = {
    # One read in ten fails (about 30 faults a run); with six attempts per read a final
    # failure has a chance of one in a million per read. The seed fixes the draws, but
    # which request gets which draw depends on timing, so the margin matters.
    "reads_500": Case(faults=on_reads("500", 0.1)),
    "reads_502": Case(faults=on_reads("502", 0.1)),
    "reads_503": Case(faults=on_reads("503", 0.1)),
    "reads_429_retry_after": Case(faults=on_reads("429", 0.1)),
    "reads_connection_reset": Case(faults=on_reads("reset", 0.1)),
    "reads_slower_than_timeout": Case(faults=on_reads("slow", 0.1)),
    "reads_malformed_json": Case(faults=on_reads("malformed", 0.1)),
    # The client reads faster than the server allows: the 429s are waited out and retried.
    "read_rate_limit": Case(
        config={"read_rate_limit": 40.0}, env={"OPENMART_READS_PER_SECOND": "60"}
    ),
    "submit_429_is_retried": Case(faults={"submit": {"429": 0.2}}),
    "submit_429_every_time": Case(
        faults={"submit": {"429": 1.0}},
        statuses={"not_sent"},
        returncode=1,
        message="never reached the server; run again",
        accepted="none",
    ),
    "submit_500_before_accepting": Case(
        faults={"submit": {"500": 1.0}},
        statuses={"submit_unknown"},
        returncode=1,
        message="submit_unknown",
        accepted="none",
    ),
    "submit_accepted_then_500": Case(
        faults={"submit": {"accept_then_500": 1.0}},
        statuses={"submit_unknown"},
        returncode=1,
        message="--resubmit-unknown",
    ),
    "submit_accepted_then_connection_dropped": Case(
        faults={"submit": {"accept_then_reset": 1.0}},
        statuses={"submit_unknown"},
        returncode=1,
        message="may pay twice",
    ),
    "submit_accepted_then_malformed": Case(
        faults={"submit": {"malformed": 1.0}},
        statuses={"submit_unknown"},
        returncode=1,
        message="submit_unknown",
    ),
    "wrong_key_401": Case(
        api_key="not-the-key",
        statuses=set(),
        returncode=1,
        message="OPENMART_API_KEY",
        accepted="none",
    ),
    "banned_account_403": Case(
        api_key=BANNED_KEY,
        statuses=set(),
        returncode=1,
        message="account",
        accepted="none",
    ),
}


def files_containing(root: Path, secret: str) -> list[str]:
    """Every file under root whose bytes contain the secret."""
    needle = secret.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.parametrize("name", list(CASES))
def test_fault_matrix(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    config = EmulatorConfig(
        time_scale=FAST,
        api_keys=frozenset({CANARY_KEY, BANNED_KEY}),
        banned_keys=frozenset({BANNED_KEY}),
        faults=FaultConfig(seed=7, rates=case.faults, slow_seconds=1.0, retry_after_seconds=0.05),
        **case.config,
    )
    with running_emulator(config) as emulator:
        workspace = Workspace(tmp_path, emulator.base_url, api_key=case.api_key)
        table = company_table(COMPANIES, "faultco")
        workspace.add_table("companies.csv", table)

        run = workspace.run(**{**FAST_RETRIES, **case.env})

        accepted = Counter(accepted_domains(emulator))

    assert run.returncode == case.returncode, run.output
    if case.message:
        assert case.message in run.output
    if case.statuses:
        lookups = run.domain_lookups
        assert len(lookups) == COMPANIES
        assert lookups["tracking_id"].is_unique
        assert set(lookups["status"]) <= case.statuses, lookups["status"].value_counts()
    else:
        assert run.domain_lookups is None, "a refused key must stop the run before any table"
    if case.accepted == "none":
        assert not accepted
    else:
        assert sorted(accepted) == sorted(f"faultco{i}.com" for i in range(COMPANIES))
        assert set(accepted.values()) == {1}
    assert CANARY_KEY not in run.output
    assert files_containing(tmp_path, CANARY_KEY) == []


def test_credit_limit_keeps_what_completed_and_a_rerun_sends_only_the_rest(tmp_path: Path):
    # The hold is long enough (0.5 s) to drain the account after the first submission.
    config = EmulatorConfig(time_scale=0.02, api_keys=frozenset({CANARY_KEY}))
    with running_emulator(config) as emulator:
        workspace = Workspace(tmp_path, emulator.base_url, api_key=CANARY_KEY)
        workspace.add_table("companies.csv", company_table(COMPANIES, "faultco"))

        process = workspace.start(OPENMART_MAX_SUBMISSIONS_IN_FLIGHT="1", **FAST_RETRIES)
        wait_for(lambda: emulator.state.stats()["submissions_accepted"] >= 1, process)
        emulator.state.set_credits(0)
        output, _ = process.communicate(timeout=120)
        first, _ = workspace.tables()
        accepted_first = len(accepted_domains(emulator))
        emulator.state.set_credits(None)
        second = workspace.run(**FAST_RETRIES)
        accepted = Counter(accepted_domains(emulator))

    assert process.returncode == 1
    assert "credit limit was reached: 150 lookup(s) were not sent" in output
    statuses = first["status"].value_counts()
    assert statuses.get("credit_limit") == 150
    assert set(statuses.index) - {"credit_limit"} <= FINAL
    assert accepted_first == 100
    assert second.returncode == 0, second.output
    assert set(second.domain_lookups["status"]) <= FINAL
    assert len(accepted) == COMPANIES and set(accepted.values()) == {1}
    assert files_containing(tmp_path, CANARY_KEY) == []


def test_balance_below_the_need_sends_what_fits_and_fails_saying_what_is_left(tmp_path: Path):
    config = EmulatorConfig(time_scale=FAST, api_keys=frozenset({CANARY_KEY}), credits=150)
    with running_emulator(config) as emulator:
        workspace = Workspace(tmp_path, emulator.base_url, api_key=CANARY_KEY)
        workspace.add_table("companies.csv", company_table(COMPANIES, "faultco"))

        run = workspace.run(**FAST_RETRIES)
        accepted = accepted_domains(emulator)

    assert run.returncode == 1, run.output
    assert "100 over budget" in run.output
    assert "100 row(s) are over_budget" in run.output and "add credits" in run.output
    statuses = run.domain_lookups["status"].value_counts()
    assert statuses.get("over_budget") == 100
    assert len(accepted) == 150 == len(set(accepted))


def test_poll_deadline_leaves_rows_pending_and_a_rerun_collects_them(tmp_path: Path):
    # Tasks take up to 3 s here, the deadline is 0.3 s: the batches are not ready in time.
    config = EmulatorConfig(
        time_scale=1.0,
        hold_seconds=0.01,
        max_task_seconds=3.0,
        api_keys=frozenset({CANARY_KEY}),
    )
    with running_emulator(config) as emulator:
        workspace = Workspace(tmp_path, emulator.base_url, api_key=CANARY_KEY)
        workspace.add_table("companies.csv", company_table(COMPANIES, "faultco"))

        first = workspace.run(OPENMART_POLL_DEADLINE_SECONDS="0.3", **FAST_RETRIES)
        second = workspace.run(**FAST_RETRIES)
        accepted = Counter(accepted_domains(emulator))

    assert first.returncode == 1
    assert "pending" in first.output
    pending = first.domain_lookups[first.domain_lookups["status"] == "pending"]
    assert len(pending) > 0 and pending["batch_id"].notna().all()
    assert second.returncode == 0, second.output
    assert set(second.domain_lookups["status"]) <= FINAL
    assert len(accepted) == COMPANIES and set(accepted.values()) == {1}


def test_task_reads_that_keep_failing_are_read_failed_and_a_rerun_reads_them(tmp_path: Path):
    faults = FaultConfig(seed=1, rates={"task": {"503": 1.0}})
    config = EmulatorConfig(time_scale=FAST, api_keys=frozenset({CANARY_KEY}), faults=faults)
    with running_emulator(config) as emulator:
        workspace = Workspace(tmp_path, emulator.base_url, api_key=CANARY_KEY)
        workspace.add_table("companies.csv", company_table(COMPANIES, "faultco"))

        first = workspace.run(OPENMART_RETRY_INITIAL_SECONDS="0.01")
        emulator.state.set_faults(FaultConfig())
        second = workspace.run(OPENMART_RETRY_INITIAL_SECONDS="0.01")
        accepted = Counter(accepted_domains(emulator))

    assert first.returncode == 1
    assert "read_failed: their task could not be read; run again" in first.output
    failed = first.domain_lookups
    assert set(failed["status"]) == {"read_failed"}
    assert failed["batch_id"].notna().all()
    assert second.returncode == 0, second.output
    assert set(second.domain_lookups["status"]) <= FINAL
    assert len(accepted) == COMPANIES and set(accepted.values()) == {1}
    assert "distinct lookups sent this run 0" in second.output
