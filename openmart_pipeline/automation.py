"""The sensor that notices new or changed domain tables, and the refresh schedule.

The sensor's cursor maps each file to a digest of its content and a count of the changes
seen, so a restart of the daemon neither misses a change nor starts a run for a file it
has already seen; the count keeps run keys unique when a file returns to earlier content.
"""

import hashlib
import json

from dagster import (
    AddDynamicPartitionsRequest,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    schedule,
    sensor,
)
from dagster._utils.schedules import is_valid_cron_string  # not exported at top level

from openmart_pipeline.assets import domain_tables_partitions
from openmart_pipeline.settings import domain_files, env_text

JOB_NAME = "openmart_lookup_job"
DEFAULT_REFRESH_CRON = "0 6 1 * *"  # 06:00 UTC on the first day of each month


def file_digest(path) -> str:
    """A digest of the file's content: unchanged bytes mean no new run."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


@sensor(
    job_name=JOB_NAME,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Registers each new domain table under OPENMART_DOMAINS_PATH as a partition "
    "and runs it; runs a changed table again (only stale or new lookups are sent).",
)
def domain_table_sensor(context: SensorEvaluationContext) -> SensorResult:
    seen: dict[str, dict] = json.loads(context.cursor) if context.cursor else {}
    state = {}
    requests = []
    for name, path in domain_files().items():
        digest = file_digest(path)
        before = seen.get(name, {"digest": None, "changes": 0})
        changes = before["changes"] + (before["digest"] != digest)
        state[name] = {"digest": digest, "changes": changes}
        if before["digest"] != digest:
            requests.append(RunRequest(run_key=f"{name}:{changes}", partition_key=name))

    known = set(context.instance.get_dynamic_partitions(domain_tables_partitions.name))
    new = [name for name in state if name not in known]
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=(
            [AddDynamicPartitionsRequest(domain_tables_partitions.name, new)] if new else []
        ),
        cursor=json.dumps(state, sort_keys=True),
    )


def refresh_cron() -> str:
    """The schedule's cron from OPENMART_REFRESH_CRON, checked so a typo gets a clear message.

    Raises:
        ValueError: naming the variable and the expected form.
    """
    cron = env_text("OPENMART_REFRESH_CRON", DEFAULT_REFRESH_CRON)
    if not is_valid_cron_string(cron):
        raise ValueError(
            f"OPENMART_REFRESH_CRON={cron!r} is not a cron expression: use five fields, "
            f"minute hour day-of-month month day-of-week, e.g. {DEFAULT_REFRESH_CRON!r}"
        )
    return cron


@schedule(
    job_name=JOB_NAME,
    cron_schedule=refresh_cron(),
    default_status=DefaultScheduleStatus.STOPPED,
    description="Refreshes every domain table; lookups younger than refresh_after_days are "
    "carried over, so only stale ones are sent. Set OPENMART_REFRESH_CRON to change when.",
)
def refresh_schedule(context: ScheduleEvaluationContext):
    stamp = context.scheduled_execution_time.isoformat()
    for name in context.instance.get_dynamic_partitions(domain_tables_partitions.name):
        yield RunRequest(run_key=f"{name}:{stamp}", partition_key=name)
