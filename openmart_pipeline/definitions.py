"""The Dagster code location: assets, the lookup job, and resources read from the environment.

Every run executes in one process (`in_process_executor`): a submit-and-wait step spends
its time waiting on the API, and concurrency comes from asyncio inside the step, so a
process per step would only add start-up cost on a small machine.
"""

from __future__ import annotations

from dagster import (
    AssetSelection,
    Definitions,
    EnvVar,
    define_asset_job,
    in_process_executor,
)

from openmart_pipeline.assets import domain_table, domain_tables_partitions, openmart_lookups
from openmart_pipeline.automation import JOB_NAME, domain_table_sensor, refresh_schedule
from openmart_pipeline.checks import ASSET_CHECKS
from openmart_pipeline.io_manager import ParquetIOManagerFactory
from openmart_pipeline.resources import LedgerResource, OpenmartResource
from openmart_pipeline.resources.openmart import DEFAULT_BASE_URL
from openmart_pipeline.settings import env_number, env_text, ledger_location, output_path

LOOKUP_JOB_NAME = JOB_NAME

lookup_job = define_asset_job(
    LOOKUP_JOB_NAME,
    selection=AssetSelection.assets(domain_table, openmart_lookups),
    partitions_def=domain_tables_partitions,
    description="Read a domain table and look up its companies' shared mailboxes.",
)


def build_resources() -> dict[str, object]:
    """The resources, configured from the OPENMART_* environment variables."""
    return {
        "openmart": OpenmartResource(
            api_key=EnvVar("OPENMART_API_KEY"),
            base_url=env_text("OPENMART_BASE_URL", DEFAULT_BASE_URL),
            reads_per_second=env_number("OPENMART_READS_PER_SECOND", 20.0),
            read_timeout_seconds=env_number("OPENMART_READ_TIMEOUT_SECONDS", 20.0),
            retry_initial_seconds=env_number("OPENMART_RETRY_INITIAL_SECONDS", 0.5),
            max_submissions_in_flight=int(env_number("OPENMART_MAX_SUBMISSIONS_IN_FLIGHT", 8)),
            poll_interval_seconds=env_number("OPENMART_POLL_INTERVAL_SECONDS", 2.0),
            poll_deadline_seconds=env_number("OPENMART_POLL_DEADLINE_SECONDS", 3600.0),
        ),
        "ledger": LedgerResource(
            path=ledger_location(),
            claim_lease_seconds=env_number("OPENMART_CLAIM_LEASE_SECONDS", 600.0),
        ),
        "parquet_io_manager": ParquetIOManagerFactory(base_path=output_path()),
    }


defs = Definitions(
    assets=[domain_table, openmart_lookups],
    asset_checks=ASSET_CHECKS,
    jobs=[lookup_job],
    sensors=[domain_table_sensor],
    schedules=[refresh_schedule],
    resources=build_resources(),
    executor=in_process_executor,
)
