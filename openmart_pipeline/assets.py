"""The assets: a domain table in, the lookups and the mailboxes they found out.

    domain_table ──▶ plan_batches ──▶ submit_and_wait (mapped) ──▶ build_tables
                                                                    ├─▶ domain_lookups
                                                                    └─▶ company_emails

Each domain table file is a partition; the ops of the graph live in `ops.py`.
"""

from pathlib import Path

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetOut,
    Config,
    DynamicPartitionsDefinition,
    Failure,
    asset,
    graph_multi_asset,
)
from pydantic import Field

from openmart_pipeline.domains import load_hosted_domains
from openmart_pipeline.ops import build_tables, plan_batches, submit_and_wait
from openmart_pipeline.settings import domain_files, env_text
from openmart_pipeline.tables import (
    COLUMN_MAP_ENV_VAR,
    DomainTableError,
    parse_column_map,
    read_domain_table,
)

domain_tables_partitions = DynamicPartitionsDefinition(name="domain_tables")
HOSTED_DOMAINS_ENV_VAR = "OPENMART_HOSTED_DOMAINS_FILE"


class DomainTableConfig(Config):
    """How a domain table is read."""

    column_map: dict[str, str] = Field(
        default_factory=dict,
        description="Canonical column -> the table's column, e.g. {'domain': 'Web Address'}.",
    )
    company_name_from_domain: bool = Field(
        default=False,
        description="Derive a missing company name from the domain instead of rejecting it.",
    )


@asset(
    partitions_def=domain_tables_partitions,
    io_manager_key="parquet_io_manager",
    group_name="openmart",
)
def domain_table(context: AssetExecutionContext, config: DomainTableConfig) -> pd.DataFrame:
    """One row per input row, with its tracking ID, normalized domain, or reject reason."""
    files = domain_files()
    path = files.get(context.partition_key)
    if path is None:
        raise Failure(
            f"domain table {context.partition_key!r} is not in OPENMART_DOMAINS_PATH any more "
            f"(found: {', '.join(files) or 'nothing'})"
        )
    hosted_file = env_text(HOSTED_DOMAINS_ENV_VAR, "") or None
    if hosted_file and not Path(hosted_file).is_file():
        raise Failure(
            f"{HOSTED_DOMAINS_ENV_VAR} points at {hosted_file!r}, which is not a file: set it "
            "to a text file of extra hosted-site domains, one per line, or unset it",
            allow_retries=False,
        )
    try:
        table = read_domain_table(
            path,
            column_map=config.column_map or parse_column_map(env_text(COLUMN_MAP_ENV_VAR, "")),
            company_name_from_domain=config.company_name_from_domain,
            hosted_domains=load_hosted_domains(hosted_file),
        )
    except (DomainTableError, ValueError, OSError) as error:
        # The reader's message names the file, the row or column, and the fix.
        raise Failure(str(error), allow_retries=False) from None
    rejected = table["reason"].notna()
    context.log.info(
        f"read {len(table)} rows from {path.name}: {int((~rejected).sum())} to look up, "
        f"{int(rejected.sum())} rejected"
    )
    context.add_output_metadata(
        {
            "rows": len(table),
            "rejected": int(rejected.sum()),
            "rejected_by_reason": table.loc[rejected, "reason"].value_counts().to_dict(),
        }
    )
    return table


@graph_multi_asset(
    outs={
        "domain_lookups": AssetOut(
            io_manager_key="parquet_io_manager",
            description="One row per input row, whatever happened to it: found, not_found, "
            "errored, cancelled, rejected (with a reason) or a state that needs another run.",
        ),
        "company_emails": AssetOut(
            io_manager_key="parquet_io_manager",
            description="One row per shared mailbox found, with the tracking ID of its row.",
        ),
    },
    partitions_def=domain_tables_partitions,
    group_name="openmart",
)
def openmart_lookups(domain_table: pd.DataFrame):
    """Look up every row of a domain table: one row per input row, one per mailbox found."""
    plan, batches = plan_batches(domain_table)
    reports = batches.map(submit_and_wait).collect()
    domain_lookups, company_emails = build_tables(domain_table, plan, reports)
    return {"domain_lookups": domain_lookups, "company_emails": company_emails}
