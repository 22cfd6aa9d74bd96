"""The sensor that notices new or changed domain tables, and the refresh schedule.

The sensor's cursor maps each file to a digest of its content, so a restart of the daemon
neither misses a change nor starts a run for a file it has already seen.
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
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    current = {name: file_digest(path) for name, path in domain_files().items()}
    changed = [name for name, digest in current.items() if seen.get(name) != digest]

    known = set(context.instance.get_dynamic_partitions(domain_tables_partitions.name))
    new = [name for name in current if name not in known]
    requests = [
        RunRequest(run_key=f"{name}:{current[name]}", partition_key=name) for name in changed
    ]
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=(
            [AddDynamicPartitionsRequest(domain_tables_partitions.name, new)] if new else []
        ),
        cursor=json.dumps(current, sort_keys=True),
    )


@schedule(
    job_name=JOB_NAME,
    cron_schedule=env_text("OPENMART_REFRESH_CRON", DEFAULT_REFRESH_CRON),
    default_status=DefaultScheduleStatus.STOPPED,
    description="Refreshes every domain table; lookups younger than refresh_after_days are "
    "carried over, so only stale ones are sent. Set OPENMART_REFRESH_CRON to change when.",
)
def refresh_schedule(context: ScheduleEvaluationContext):
    stamp = context.scheduled_execution_time.isoformat()
    for name in context.instance.get_dynamic_partitions(domain_tables_partitions.name):
        yield RunRequest(run_key=f"{name}:{stamp}", partition_key=name)
