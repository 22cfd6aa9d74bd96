"""Beyond one machine: outputs on S3, the ledger and the Dagster instance on PostgreSQL.

Each test starts its own servers on loopback (moto's S3 server, a throw-away PostgreSQL
cluster) and the emulator, and runs `openmart-pipeline run` as separate processes that
share nothing but the database and the bucket.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from openmart_pipeline.emulator import EmulatorConfig, running_emulator
from openmart_pipeline.io_manager import read_table
from openmart_pipeline_tests.conftest import (
    FAST,
    FINAL,
    TEST_KEY,
    Workspace,
    accepted_domains,
    at_once,
    company_table,
)
from openmart_pipeline_tests.servers import running_postgres, running_s3


@pytest.fixture(scope="module")
def postgres():
    with running_postgres(databases=("openmart", "dagster", "openmart_two")) as server:
        yield server


@pytest.fixture
def s3(monkeypatch):
    s3fs = pytest.importorskip("s3fs")
    with running_s3() as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        # fsspec caches filesystems; a cached one would still point at an earlier server.
        s3fs.S3FileSystem.clear_instance_cache()
        yield server


def test_outputs_on_s3_with_the_ledger_on_postgres(tmp_path: Path, postgres, s3):
    output = f"s3://{s3.bucket}/runs"
    config = EmulatorConfig(time_scale=FAST, api_keys=frozenset({TEST_KEY}))
    with running_emulator(config) as emulator:
        workspace = Workspace(tmp_path, emulator.base_url)
        workspace.add_table("companies.csv", company_table(150, "s3co"))
        env = {
            **s3.env(),
            "OPENMART_OUTPUT_PATH": output,
            "OPENMART_LEDGER_URL": postgres.url("openmart"),
        }

        run = workspace.run(**env)
        again = workspace.run(**env)
        accepted = Counter(accepted_domains(emulator))

    assert run.returncode == 0, run.output
    lookups = read_table(output, "domain_lookups")
    emails = read_table(output, "company_emails")
    assert len(lookups) == 150 and lookups["tracking_id"].is_unique
    assert set(lookups["status"]) <= FINAL
    assert set(emails["tracking_id"]) <= set(
        lookups.loc[lookups["status"] == "found", "tracking_id"]
    )
    assert again.returncode == 0, again.output
    assert len(accepted) == 150 and set(accepted.values()) == {1}
    assert not (tmp_path / "output").exists(), "nothing may be written to the local default"


def test_remote_outputs_without_a_ledger_database_are_refused(tmp_path: Path, s3):
    workspace = Workspace(tmp_path, "http://127.0.0.1:9")
    workspace.add_table("companies.csv", company_table(3, "refusedco"))

    run = workspace.run(**s3.env(), OPENMART_OUTPUT_PATH=f"s3://{s3.bucket}/x")

    assert run.returncode == 2
    assert "OPENMART_LEDGER_URL" in run.output
    assert "Traceback" not in run.output


def test_two_machines_sharing_only_database_and_bucket_buy_each_lookup_once(
    tmp_path: Path, postgres, s3
):
    output = f"s3://{s3.bucket}/shared"
    everyone = company_table(450, "twoco")
    config = EmulatorConfig(time_scale=0.01, api_keys=frozenset({TEST_KEY}))
    with running_emulator(config) as emulator:
        machines = {}
        for name, rows in (("a", slice(0, 300)), ("b", slice(150, 450))):
            machine = Workspace(tmp_path / name, emulator.base_url)
            machine.add_table(f"list_{name}.csv", everyone.iloc[rows])
            machines[name] = machine
        env = {
            **s3.env(),
            "OPENMART_OUTPUT_PATH": output,
            "OPENMART_LEDGER_URL": postgres.url("openmart_two"),
        }
        runs = at_once({name: lambda m=machine: m.run(**env) for name, machine in machines.items()})
        accepted = Counter(accepted_domains(emulator))

    assert runs["a"].returncode == 0, runs["a"].output
    assert runs["b"].returncode == 0, runs["b"].output
    assert len(accepted) == 450 and set(accepted.values()) == {1}
    lookups = read_table(output, "domain_lookups")
    assert sorted(Counter(lookups["source_file"]).items()) == [
        ("list_a.csv", 300),
        ("list_b.csv", 300),
    ]
    assert set(lookups["status"]) <= FINAL


def test_dagster_instance_on_postgres_records_runs_checks_and_caps_the_pool(
    tmp_path: Path, postgres
):
    home = tmp_path / "dagster_home"
    home.mkdir()
    # SQLAlchemy 2.1 defaults to psycopg 3; dagster-postgres speaks psycopg2.
    storage_url = postgres.url("dagster").replace("postgresql:", "postgresql+psycopg2:")
    (home / "dagster.yaml").write_text(
        "storage:\n"
        "  postgres:\n"
        f"    postgres_url: {storage_url}\n"
        "concurrency:\n"
        "  pools:\n"
        "    default_limit: 1\n"
        "telemetry:\n"
        "  enabled: false\n"
    )
    # A 0.5 s hold and one submission in flight per run: two runs at once would overlap
    # their submissions if the pool did not make one wait for the other.
    config = EmulatorConfig(time_scale=0.02, api_keys=frozenset({TEST_KEY}))
    with running_emulator(config) as emulator:

        def run(name: str):
            workspace = Workspace(tmp_path / name, emulator.base_url)
            workspace.add_table(f"{name}.csv", company_table(300, f"pool{name}co"))
            return workspace.run(DAGSTER_HOME=str(home), OPENMART_MAX_SUBMISSIONS_IN_FLIGHT="1")

        runs = at_once({name: lambda name=name: run(name) for name in ("a", "b")})
        stats = emulator.state.stats()

    assert runs["a"].returncode == 0, runs["a"].output
    assert runs["b"].returncode == 0, runs["b"].output
    assert stats["tasks_accepted"] == 600
    assert stats["max_submissions_in_flight"] == 1

    from dagster import DagsterInstance
    from dagster._core.event_api import EventRecordsFilter
    from dagster._core.events import DagsterEventType

    with DagsterInstance.from_config(str(home)) as instance:
        assert len(instance.get_runs()) == 2
        checks = instance.get_event_records(
            EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION)
        )
    evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in checks]
    assert len(evaluations) == 8 and all(e.passed for e in evaluations)


def test_postgres_ledger_lets_only_one_of_two_planners_claim_a_lookup(postgres):
    from openmart_pipeline.ledger import Ledger

    ids = [f"Lpg{i:04d}" for i in range(250)]
    ledgers = {name: Ledger(postgres.url("openmart")) for name in ("a", "b")}
    plans = at_once(
        {
            name: lambda name=name, ledger=ledger: ledger.plan(
                f"run-{name}", ids, refresh_after_seconds=60
            )
            for name, ledger in ledgers.items()
        }
    )

    claimed = [lid for p in plans.values() for batch in p.new for lid in batch.lookup_ids]
    waiting = [lid for p in plans.values() for batch in p.wait for lid in batch.lookup_ids]
    assert sorted(claimed) == ids, "every lookup claimed exactly once"
    assert sorted(waiting) == ids, "the other planner waits for every one of them"
