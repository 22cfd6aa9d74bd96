"""The Dagster UI and daemon, run for real: a partition materialized through the GraphQL API.

`dagster-webserver` and `dagster-daemon` run as subprocesses on loopback with their own
DAGSTER_HOME, as an operator runs them, against the emulator. Everything the test does goes
through the webserver's GraphQL API, which is what the UI's buttons call.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import pytest

from openmart_pipeline.emulator import EmulatorConfig, running_emulator
from openmart_pipeline_tests.conftest import COMPANIES_CSV, FAST, REPO, TEST_KEY, Workspace

BIN = REPO / ".venv" / "bin"
WORKSPACE_YAML = REPO / "workspace.yaml"
REPOSITORY = "__repository__"
JOB = "openmart_lookup_job"
SENSOR_NAME = "domain_table_sensor"
TABLE = "ui_companies.csv"
ROWS = 30
# Generous limits for a slow machine; a healthy run finishes far sooner.
STARTUP_LIMIT_SECONDS = 60
RUN_LIMIT_SECONDS = 90
# Telemetry off: nothing may leave loopback. A short dequeue interval keeps the test quick.
INSTANCE_YAML = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
"""
CHECKS = [
    ("domain_lookups", "lineage"),
    ("domain_lookups", "schema"),
    ("company_emails", "mailboxes"),
    ("company_emails", "schema"),
]


class GraphQLError(AssertionError):
    """The webserver answered a query with errors."""


@dataclass
class Deployment:
    """A running webserver and daemon over one workspace, and what they printed."""

    workspace: Workspace
    graphql: httpx.Client
    location: str = ""
    logs: list[Path] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)

    def query(self, text: str, **variables: object) -> dict:
        response = self.graphql.post("/graphql", json={"query": text, "variables": variables})
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise GraphQLError(body["errors"])
        return body["data"]

    def start(self, name: str, *args: str) -> None:
        log = self.workspace.root / f"{name}.log"
        self.logs.append(log)
        with log.open("w") as handle:
            self.processes.append(
                subprocess.Popen(
                    [str(BIN / name), *args],
                    env=self.workspace.env(),
                    cwd=self.workspace.root,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                )
            )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def output(self) -> str:
        return "\n".join(log.read_text(errors="replace") for log in self.logs)

    def selector(self, **extra: str) -> dict:
        return {"repositoryLocationName": self.location, "repositoryName": REPOSITORY, **extra}


@dataclass
class Materialization:
    """One run launched through GraphQL, and the deployment it ran in."""

    deployment: Deployment
    run_id: str
    status: str
    events: list[dict]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(what: str, probe, limit: float, deployment: Deployment):
    """Call `probe` until it returns something truthy; fail with the processes' output."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for process in deployment.processes:
            if process.poll() is not None:
                pytest.fail(
                    f"{process.args[0]} exited while waiting for {what}:\n"
                    + deployment.output()[-4000:]
                )
        try:
            found = probe()
        except (httpx.TransportError, GraphQLError):
            found = None
        if found:
            return found
        time.sleep(0.25)
    pytest.fail(f"no {what} after {limit} s:\n" + deployment.output()[-4000:])


LOCATIONS = """
{ workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } }
} } } }
"""


def loaded_location(deployment: Deployment) -> str | None:
    entries = deployment.query(LOCATIONS)["workspaceOrError"]["locationEntries"]
    for entry in entries:
        error = entry["locationOrLoadError"]
        if error and error["__typename"] == "PythonError":
            pytest.fail(f"code location {entry['name']} failed to load: {error['message']}")
        if entry["loadStatus"] == "LOADED" and error:
            return entry["name"]
    return None


SENSOR = """
query ($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
    __typename ... on Sensor { sensorState { id status } }
} }
"""
STOP_SENSOR = """
mutation ($id: String!) { stopSensor(id: $id) {
    __typename ... on StopSensorMutationResult { instigationState { status } }
} }
"""
SCHEDULE = """
query ($selector: ScheduleSelector!) { scheduleOrError(scheduleSelector: $selector) {
    __typename ... on Schedule { cronSchedule scheduleState { status } }
} }
"""
ADD_PARTITION = """
mutation ($repo: RepositorySelector!, $key: String!) {
    addDynamicPartition(repositorySelector: $repo, partitionsDefName: "domain_tables",
                        partitionKey: $key) {
        __typename ... on Error { message }
} }
"""
LAUNCH_RUN = """
mutation ($params: ExecutionParams!) { launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
    ... on RunConfigValidationInvalid { errors { message } }
} }
"""
RUN = """
query ($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }
"""
RUN_EVENTS = """
query ($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events {
    __typename ... on MessageEvent { message level stepKey }
} } } }
"""
CHECK_EXECUTIONS = """
query ($asset: AssetKeyInput!, $check: String!) {
    assetCheckExecutions(assetKey: $asset, checkName: $check, limit: 10) {
        runId status partition evaluation {
            success metadataEntries { label ... on IntMetadataEntry { intValue } }
        }
} }
"""
RESOURCE = """
query ($selector: ResourceSelector!) { topLevelResourceDetailsOrError(resourceSelector: $selector) {
    __typename ... on ResourceDetails { configuredValues { key value type } }
} }
"""
ASSET_GROUPS = "{ assetNodes { assetKey { path } groupName } }"
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Iterator[Deployment]:
    """Webserver and daemon over one domain table of 30 companies, the sensor stopped.

    The sensor is on by default and would start its own run of the new table as soon as
    the daemon starts, so it is stopped first, through the UI's API, to keep one run.
    """
    config = EmulatorConfig(time_scale=FAST, api_keys=frozenset({TEST_KEY}))
    with running_emulator(config) as emulator:
        workspace = Workspace(tmp_path_factory.mktemp("ui"), emulator.base_url)
        companies = pd.read_csv(COMPANIES_CSV, dtype=str, keep_default_na=False)
        workspace.add_table(TABLE, companies[["company_name", "website"]].head(ROWS))
        home = workspace.root / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(INSTANCE_YAML)

        port = free_port()
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        deployment = Deployment(workspace, client)
        try:
            deployment.start(
                "dagster-webserver", "-h", "127.0.0.1", "-p", str(port), "-w", str(WORKSPACE_YAML)
            )
            deployment.location = wait_for(
                "loaded code location",
                lambda: loaded_location(deployment),
                STARTUP_LIMIT_SECONDS,
                deployment,
            )
            yield deployment
        finally:
            deployment.stop()
            client.close()


@pytest.fixture(scope="module")
def materialization(deployment: Deployment) -> Materialization:
    """One partition registered and materialized through GraphQL, run by the daemon."""
    sensor = deployment.query(SENSOR, selector=deployment.selector(sensorName=SENSOR_NAME))
    state = sensor["sensorOrError"]["sensorState"]
    stopped = deployment.query(STOP_SENSOR, id=state["id"])["stopSensor"]
    assert stopped["instigationState"]["status"] == "STOPPED", stopped
    deployment.start("dagster-daemon", "run", "-w", str(WORKSPACE_YAML))

    added = deployment.query(ADD_PARTITION, repo=deployment.selector(), key=TABLE)
    assert added["addDynamicPartition"]["__typename"] == "AddDynamicPartitionSuccess", added
    params = {
        "selector": deployment.selector(jobName=JOB),
        "runConfigData": {},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": TABLE}]},
    }
    launched = deployment.query(LAUNCH_RUN, params=params)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def finished() -> str | None:
        status = deployment.query(RUN, id=run_id)["runOrError"]["status"]
        return status if status in TERMINAL else None

    status = wait_for("finished run", finished, RUN_LIMIT_SECONDS, deployment)
    events = deployment.query(RUN_EVENTS, id=run_id)["logsForRun"]["events"]
    return Materialization(deployment, run_id, status, events)


def failure_messages(events: list[dict]) -> str:
    return "\n".join(
        f"{e.get('stepKey')}: {e.get('message')}" for e in events if e.get("level") == "ERROR"
    )


def test_ui_shows_the_sensor_running_and_the_schedule_stopped_by_default(deployment):
    sensor = deployment.query(SENSOR, selector=deployment.selector(sensorName=SENSOR_NAME))
    schedule = deployment.query(
        SCHEDULE, selector=deployment.selector(scheduleName="refresh_schedule")
    )

    # Read before the materialization fixture stops the sensor (tests run in file order).
    assert sensor["sensorOrError"]["sensorState"]["status"] == "RUNNING"
    assert schedule["scheduleOrError"]["scheduleState"]["status"] == "STOPPED"
    assert schedule["scheduleOrError"]["cronSchedule"] == "0 6 1 * *"


def test_ui_shows_the_api_key_as_an_env_var_not_its_value(deployment):
    answer = deployment.query(RESOURCE, selector=deployment.selector(resourceName="openmart"))

    values = {v["key"]: v for v in answer["topLevelResourceDetailsOrError"]["configuredValues"]}
    assert values["api_key"]["type"] == "ENV_VAR"
    assert values["api_key"]["value"] == "OPENMART_API_KEY"
    assert TEST_KEY not in str(answer)


def test_ui_shows_all_three_assets_in_the_openmart_group(deployment):
    nodes = deployment.query(ASSET_GROUPS)["assetNodes"]

    groups = {"/".join(node["assetKey"]["path"]): node["groupName"] for node in nodes}
    assert groups == {
        "domain_table": "openmart",
        "domain_lookups": "openmart",
        "company_emails": "openmart",
    }


def test_ui_launched_partition_run_succeeds_through_the_daemon(materialization):
    assert materialization.status == "SUCCESS", failure_messages(materialization.events)


def check_executions(materialization: Materialization) -> dict[str, list[dict]]:
    """Each asset check's executions in the materialization's run, by `asset.check`."""
    found = {}
    for asset, check in CHECKS:
        answer = materialization.deployment.query(
            CHECK_EXECUTIONS, asset={"path": [asset]}, check=check
        )
        found[f"{asset}.{check}"] = [
            e for e in answer["assetCheckExecutions"] if e["runId"] == materialization.run_id
        ]
    return found


def test_ui_launched_run_passes_every_asset_check(materialization):
    executions = check_executions(materialization)

    outcomes = {
        name: [(e["status"], (e["evaluation"] or {}).get("success")) for e in runs]
        for name, runs in executions.items()
    }
    assert outcomes == {name: [("SUCCEEDED", True)] for name in outcomes}
    assert len(outcomes) == len(CHECKS)


def test_ui_lineage_check_judges_the_run_partition_rows(materialization):
    (lineage,) = check_executions(materialization)["domain_lookups.lineage"]

    counts = {
        entry["label"]: entry.get("intValue") for entry in lineage["evaluation"]["metadataEntries"]
    }
    assert counts["input_rows"] == ROWS
    assert counts["lookup_rows"] == ROWS
    assert counts["rows_missing"] == 0


def test_ui_records_each_check_result_against_its_partition(materialization):
    executions = check_executions(materialization)

    partitions = {name: [e["partition"] for e in runs] for name, runs in executions.items()}
    assert partitions == {name: [TABLE] for name in partitions}


def test_ui_launched_run_writes_both_tables_covering_every_input_row(materialization):
    output = materialization.deployment.workspace.output

    lookups = pd.read_parquet(output / "domain_lookups" / f"{TABLE}.parquet")
    emails = pd.read_parquet(output / "company_emails" / f"{TABLE}.parquet")
    assert sorted(lookups["row_number"]) == list(range(1, ROWS + 1))
    assert lookups["tracking_id"].is_unique
    assert (lookups["source_file"] == TABLE).all()
    found = lookups.loc[lookups["status"] == "found", "tracking_id"]
    assert len(emails) > 0
    assert set(emails["tracking_id"]) <= set(found)


def test_ui_and_daemon_never_reveal_the_api_key(materialization):
    deployment = materialization.deployment
    key = TEST_KEY.encode()

    # Process output, the instance's storage (event logs, run records, compute logs) and
    # the tables: every file either process or the run worker wrote.
    leaks = [
        str(path)
        for root in (deployment.workspace.root,)
        for path in root.rglob("*")
        if path.is_file() and key in path.read_bytes()
    ]
    assert deployment.output(), "the processes printed nothing; the log capture is broken"
    assert leaks == []
    assert TEST_KEY not in str(materialization.events)


def test_definitions_validate_from_a_fresh_clone_environment(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENMART_", "DAGSTER_"))}
    env["DAGSTER_HOME"] = str(tmp_path)
    (tmp_path / "dagster.yaml").write_text(INSTANCE_YAML)

    result = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", str(WORKSPACE_YAML)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
