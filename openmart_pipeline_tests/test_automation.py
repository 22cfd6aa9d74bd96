"""The sensor that turns domain table files into partitions and runs, and the refresh schedule.

The sensor is evaluated as the daemon evaluates it: with the cursor of its previous tick,
and with the partitions it asked for added to the instance before the next tick.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import (
    DagsterInstance,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    SensorResult,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)

from openmart_pipeline.assets import domain_tables_partitions
from openmart_pipeline.automation import JOB_NAME, domain_table_sensor, refresh_schedule
from openmart_pipeline_tests.conftest import TEST_KEY

TABLE = "company_name,website\nAcme,acme.example\n"
CHANGED_TABLE = "company_name,website\nAcme,acme.example\nGlobex,globex.example\n"
MONTHLY = "0 6 1 * *"


@pytest.fixture
def domains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "domains"
    folder.mkdir()
    monkeypatch.setenv("OPENMART_DOMAINS_PATH", str(folder))
    return folder


@pytest.fixture
def instance():
    """A temporary instance on disk: a schedule's context needs one it can refer to."""
    with instance_for_test() as temporary:
        yield temporary


def evaluate(instance: DagsterInstance, cursor: str | None = None) -> SensorResult:
    """One sensor tick; like the daemon, add the partitions it asks for to the instance."""
    result = domain_table_sensor(build_sensor_context(instance=instance, cursor=cursor))
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def requested(result: SensorResult) -> list[str | None]:
    return [request.partition_key for request in result.run_requests or []]


def partitions_asked(result: SensorResult) -> list[str]:
    return [
        key
        for request in result.dynamic_partitions_requests or []
        if request.partitions_def_name == domain_tables_partitions.name
        for key in request.partition_keys
    ]


def test_sensor_is_on_by_default_and_runs_the_lookup_job():
    assert domain_table_sensor.default_status == DefaultSensorStatus.RUNNING
    assert domain_table_sensor.job_name == JOB_NAME


def test_sensor_registers_and_runs_a_new_domain_table(domains, instance):
    (domains / "a.csv").write_text(TABLE)

    result = evaluate(instance)

    assert partitions_asked(result) == ["a.csv"]
    assert requested(result) == ["a.csv"]
    assert instance.get_dynamic_partitions(domain_tables_partitions.name) == ["a.csv"]


def test_sensor_requests_nothing_when_no_table_changed(domains, instance):
    (domains / "a.csv").write_text(TABLE)
    first = evaluate(instance)

    again = evaluate(instance, cursor=first.cursor)

    assert requested(again) == []
    assert partitions_asked(again) == []


def test_sensor_runs_a_changed_table_again_under_a_new_run_key(domains, instance):
    table = domains / "a.csv"
    table.write_text(TABLE)
    first = evaluate(instance)

    table.write_text(CHANGED_TABLE)
    after_change = evaluate(instance, cursor=first.cursor)

    assert requested(after_change) == ["a.csv"]
    assert partitions_asked(after_change) == []
    assert after_change.run_requests[0].run_key != first.run_requests[0].run_key


def test_sensor_runs_only_the_added_table_when_a_second_appears(domains, instance):
    (domains / "a.csv").write_text(TABLE)
    first = evaluate(instance)

    (domains / "b.csv").write_text(TABLE)
    second = evaluate(instance, cursor=first.cursor)

    assert requested(second) == ["b.csv"]
    assert partitions_asked(second) == ["b.csv"]
    assert instance.get_dynamic_partitions(domain_tables_partitions.name) == ["a.csv", "b.csv"]


def test_sensor_ignores_hidden_files_and_files_that_are_not_tables(domains, instance):
    (domains / ".~lock.a.csv#").write_text("lock")
    (domains / ".partial.csv").write_text(TABLE)
    (domains / "notes.md").write_text("# notes")
    (domains / "a.csv").write_text(TABLE)

    result = evaluate(instance)

    assert requested(result) == ["a.csv"]
    assert partitions_asked(result) == ["a.csv"]


def test_sensor_runs_a_table_reverted_to_earlier_content_under_an_unused_run_key(domains, instance):
    table = domains / "a.csv"
    table.write_text(TABLE)
    first = evaluate(instance)
    table.write_text(CHANGED_TABLE)
    edited = evaluate(instance, cursor=first.cursor)

    table.write_text(TABLE)
    reverted = evaluate(instance, cursor=edited.cursor)

    assert requested(reverted) == ["a.csv"]
    used = {first.run_requests[0].run_key, edited.run_requests[0].run_key}
    assert reverted.run_requests[0].run_key not in used


def test_sensor_error_names_the_variable_when_the_domains_folder_is_missing(
    tmp_path, monkeypatch, instance
):
    monkeypatch.setenv("OPENMART_DOMAINS_PATH", str(tmp_path / "missing"))

    with pytest.raises(FileNotFoundError, match="OPENMART_DOMAINS_PATH"):
        evaluate(instance)


def test_schedule_is_stopped_by_default_and_runs_the_lookup_job():
    assert refresh_schedule.default_status == DefaultScheduleStatus.STOPPED
    assert refresh_schedule.job_name == JOB_NAME


def refresh_requests(instance: DagsterInstance, when: datetime):
    context = build_schedule_context(instance=instance, scheduled_execution_time=when)
    return list(refresh_schedule(context) or [])


def test_schedule_requests_one_run_per_registered_table(instance):
    instance.add_dynamic_partitions(domain_tables_partitions.name, ["a.csv", "b.csv"])

    requests = refresh_requests(instance, datetime(2025, 3, 1, 6, tzinfo=UTC))

    assert sorted(request.partition_key for request in requests) == ["a.csv", "b.csv"]
    assert len({request.run_key for request in requests}) == 2


def test_schedule_requests_nothing_when_no_table_is_registered(instance):
    assert refresh_requests(instance, datetime(2025, 3, 1, 6, tzinfo=UTC)) == []


def test_schedule_run_keys_differ_from_one_tick_to_the_next(instance):
    # Dagster drops a request whose run_key was used before, so a repeat would skip a refresh.
    instance.add_dynamic_partitions(domain_tables_partitions.name, ["a.csv"])

    march = refresh_requests(instance, datetime(2025, 3, 1, 6, tzinfo=UTC))
    april = refresh_requests(instance, datetime(2025, 4, 1, 6, tzinfo=UTC))

    assert {r.run_key for r in march}.isdisjoint({r.run_key for r in april})


def fresh_python(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run Python in a new interpreter: the cron is read when automation.py is imported."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENMART_", "DAGSTER_"))}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


PRINT_CRON = (
    "from openmart_pipeline.automation import refresh_schedule; "
    "print(refresh_schedule.cron_schedule)"
)


@pytest.mark.parametrize(
    ("env", "cron"),
    [
        pytest.param({}, MONTHLY, id="unset-monthly"),
        pytest.param({"OPENMART_REFRESH_CRON": "  "}, MONTHLY, id="blank-monthly"),
        pytest.param({"OPENMART_REFRESH_CRON": "30 2 * * 1"}, "30 2 * * 1", id="weekly"),
    ],
)
def test_schedule_cron_comes_from_openmart_refresh_cron(env, cron, tmp_path):
    result = fresh_python(["-c", PRINT_CRON], tmp_path, **env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == cron


def unused_loopback_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_schedule_bad_cron_is_reported_naming_the_variable(tmp_path):
    # A missing domains folder and a closed loopback port: nothing can be sent anywhere.
    result = fresh_python(
        ["-m", "openmart_pipeline.cli", "run"],
        tmp_path,
        OPENMART_REFRESH_CRON="every month",
        OPENMART_API_KEY=TEST_KEY,
        OPENMART_BASE_URL=unused_loopback_url(),
        OPENMART_DOMAINS_PATH=str(tmp_path / "missing"),
        OPENMART_OUTPUT_PATH=str(tmp_path / "output"),
        DAGSTER_HOME=str(tmp_path / "home"),
    )

    assert result.returncode == 2
    assert "OPENMART_REFRESH_CRON" in result.stderr
    assert "Traceback" not in result.stderr
