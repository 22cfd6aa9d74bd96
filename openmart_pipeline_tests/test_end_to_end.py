"""The main job end to end: the bundled companies through Dagster against the emulator."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from openmart_pipeline.emulator import EmulatorConfig, expected_outcome, running_emulator
from openmart_pipeline_tests.conftest import (
    COMPANIES_CSV,
    FAST,
    TEST_KEY,
    Workspace,
    accepted_domains,
)

STATUS_OF_TASK = {"ERRORED": "errored", "CANCELLED": "cancelled"}


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    """One run of the main job over the bundled companies, shared by the checks below."""
    config = EmulatorConfig(time_scale=FAST, api_keys=frozenset({TEST_KEY}))
    with running_emulator(config) as emulator:
        workspace = Workspace(tmp_path_factory.mktemp("bundled"), emulator.base_url)
        workspace.add_table("companies_real.csv", COMPANIES_CSV)
        run = workspace.run()
        assert run.returncode == 0, run.output
        yield run, emulator, workspace


def test_main_job_covers_every_input_row_once(bundled):
    run, _, _ = bundled

    companies = pd.read_csv(COMPANIES_CSV, dtype=str, keep_default_na=False)
    lookups = run.domain_lookups
    assert len(lookups) == len(companies)
    assert lookups["tracking_id"].is_unique
    assert sorted(lookups["row_number"]) == list(range(1, len(companies) + 1))
    assert (lookups["source_file"] == "companies_real.csv").all()
    assert list(lookups.sort_values("row_number")["website"]) == list(companies["website"])


def test_main_job_mailboxes_trace_back_to_found_lookups(bundled):
    run, _, _ = bundled

    lookups, emails = run.domain_lookups, run.company_emails
    found = lookups[lookups["status"] == "found"].set_index("tracking_id")
    assert len(emails) > 0
    assert set(emails["tracking_id"]) <= set(found.index)
    joined = emails.join(found[["domain", "batch_id", "task_id"]], on="tracking_id", rsuffix="_l")
    assert (joined["domain"] == joined["domain_l"]).all()
    assert (joined["batch_id"] == joined["batch_id_l"]).all()
    assert (joined["task_id"] == joined["task_id_l"]).all()
    per_row = emails.groupby("tracking_id").size()
    assert (found.loc[per_row.index, "mailbox_count"] == per_row).all()


def test_main_job_results_match_what_the_api_answered_per_domain(bundled):
    run, _, _ = bundled

    emails = run.company_emails.groupby("tracking_id")
    for row in run.domain_lookups[run.domain_lookups["status"] != "rejected"].itertuples():
        expected = expected_outcome(row.domain)
        if expected.status == "COMPLETED":
            assert row.status == ("found" if expected.mailboxes else "not_found"), row
        else:
            assert row.status == STATUS_OF_TASK[expected.status], row
        got = set()
        if row.status == "found":
            group = emails.get_group(row.tracking_id)
            got = set(zip(group["email"], group["email_status"], strict=True))
        assert got == set(expected.mailboxes), row


def test_main_job_sends_each_lookup_once(bundled):
    run, emulator, _ = bundled

    sent = run.domain_lookups[run.domain_lookups["status"] != "rejected"]
    accepted = Counter(accepted_domains(emulator))
    assert max(accepted.values()) <= sent.groupby("domain")["lookup_id"].nunique().max()
    assert sum(accepted.values()) == sent["lookup_id"].nunique()
    assert set(accepted) == set(sent["domain"])


def test_main_job_rejects_are_rows_with_reasons(bundled):
    run, emulator, _ = bundled

    rejected = run.domain_lookups[run.domain_lookups["status"] == "rejected"]
    assert len(rejected) > 0
    assert rejected["reason"].notna().all()
    assert rejected["message"].str.len().gt(10).all()
    assert rejected["batch_id"].isna().all()
    assert not set(rejected["domain"].dropna()) & set(accepted_domains(emulator))


def test_second_run_over_an_unchanged_table_sends_nothing(bundled):
    first, emulator, workspace = bundled
    accepted_after_first = len(accepted_domains(emulator))

    second = workspace.run()

    assert second.returncode == 0, second.output
    assert len(accepted_domains(emulator)) == accepted_after_first
    assert (
        second.domain_lookups["carried_over"].sum()
        == (first.domain_lookups["status"] != "rejected").sum()
    )
    columns = ["tracking_id", "status", "batch_id", "task_id", "mailbox_count"]
    before = first.domain_lookups[columns].sort_values("tracking_id").reset_index(drop=True)
    after = second.domain_lookups[columns].sort_values("tracking_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)


def test_table_without_a_domain_column_fails_with_the_columns_and_the_fix(workspace, emulator):
    workspace.add_table("crm.csv", pd.DataFrame({"Firm": ["Acme"], "Link": ["acme.io"]}))

    run = workspace.run()

    assert run.returncode == 1
    assert "'Firm'" in run.output and "'Link'" in run.output
    assert "OPENMART_COLUMN_MAP" in run.output
    assert accepted_domains(emulator) == []


def test_column_map_from_the_environment_names_the_columns(workspace, emulator):
    workspace.add_table("crm.csv", pd.DataFrame({"Firm": ["Acme"], "Link": ["acme.io"]}))

    run = workspace.run(OPENMART_COLUMN_MAP="domain=Link,company_name=Firm")

    assert run.returncode == 0, run.output
    assert list(run.domain_lookups["domain"]) == ["acme.io"]
    assert accepted_domains(emulator) == ["acme.io"]


def test_missing_api_key_is_a_message_not_a_traceback(workspace):
    workspace.add_table("companies.csv", COMPANIES_CSV)

    run = workspace.run(OPENMART_API_KEY="")

    assert run.returncode == 2
    assert "OPENMART_API_KEY is not set" in run.output
    assert "Traceback" not in run.output


def test_duplicate_tracking_ids_are_rejected_and_every_row_keeps_a_unique_key(workspace, emulator):
    table = pd.DataFrame(
        {
            "tracking_id": ["007", "007", "008"],
            "company_name": ["Acme", "Acme Again", "Other"],
            "website": ["acme-tid.com", "acme-tid2.com", "other-tid.com"],
        }
    )
    workspace.add_table("ids.csv", table)

    run = workspace.run()

    assert run.returncode == 0, run.output
    lookups = run.domain_lookups.sort_values("row_number")
    assert list(lookups["tracking_id"]) == ["007", "007~row2", "008"]
    assert list(lookups["status"].iloc[[1]]) == ["rejected"]
    assert lookups["reason"].iloc[1] == "duplicate_tracking_id"
    assert "already used by row 1" in lookups["message"].iloc[1]
    assert "acme-tid2.com" not in accepted_domains(emulator)


def test_plain_http_to_a_remote_host_is_refused_before_anything_runs(workspace, emulator):
    workspace.add_table("companies.csv", COMPANIES_CSV)

    run = workspace.run(OPENMART_BASE_URL="http://api.openmart.invalid")

    assert run.returncode == 2
    assert "the API key would travel in clear" in run.output
    assert run.domain_lookups is None
