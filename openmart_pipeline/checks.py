"""Asset checks: lineage, mailbox quality, and the documented schemas.

They run after each materialization of a partition and read that partition back from the
Parquet tables, so what they judge is what an analyst reads. The partition comes from the
run's tags: Dagster 1.13 hands a check on a partitioned asset every partition at once.
"""

import re
import warnings

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    MetadataValue,
    asset_check,
)

from openmart_pipeline.assets import domain_tables_partitions
from openmart_pipeline.io_manager import read_table
from openmart_pipeline.schemas import COMPANY_EMAILS_SCHEMA, DOMAIN_LOOKUPS_SCHEMA, to_arrow
from openmart_pipeline.settings import output_path

PARTITION_TAG = "dagster/partition"

# Checks per partition are a preview feature of Dagster 1.13 (stated in the README); the
# warning would otherwise open every run's output.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")


def _read(context: AssetCheckExecutionContext, asset: str) -> pd.DataFrame:
    partition = context.partition_key if context.has_partition_key else None
    return read_table(output_path(), asset, partition or context.run.tags.get(PARTITION_TAG))


# Deliberately plain: one @, no spaces, a dot in the domain. Deliverability is the API's job.
EMAIL_SYNTAX = re.compile(r"^[^@\s]+@[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?\.[a-z0-9-]{2,}$", re.I)
EXAMPLES_SHOWN = 5


@asset_check(
    partitions_def=domain_tables_partitions,
    asset="domain_lookups",
    blocking=True,
    additional_deps=["domain_table", "company_emails"],
    description="Every input row is in domain_lookups exactly once, and every mailbox row "
    "belongs to a found lookup with the same tracking ID.",
)
def lineage(context: AssetCheckExecutionContext) -> AssetCheckResult:
    domain_lookups = _read(context, "domain_lookups")
    domain_table = _read(context, "domain_table")
    company_emails = _read(context, "company_emails")
    counts = domain_lookups["tracking_id"].value_counts()
    missing = sorted(set(domain_table["tracking_id"]) - set(counts.index))
    repeated = sorted(counts[counts > 1].index)
    extra = sorted(set(counts.index) - set(domain_table["tracking_id"]))
    found = set(domain_lookups.loc[domain_lookups["status"] == "found", "tracking_id"])
    orphans = sorted(set(company_emails["tracking_id"]) - found)
    return AssetCheckResult(
        passed=not (missing or repeated or extra or orphans),
        metadata={
            "input_rows": len(domain_table),
            "lookup_rows": len(domain_lookups),
            "rows_missing": len(missing),
            "rows_repeated": len(repeated),
            "rows_not_in_input": len(extra),
            "mailboxes_without_found_lookup": len(orphans),
            "examples": MetadataValue.json((missing + repeated + extra + orphans)[:EXAMPLES_SHOWN]),
        },
    )


@asset_check(
    partitions_def=domain_tables_partitions,
    asset="company_emails",
    description="Mailboxes have a valid address syntax, sit at the looked-up domain or under "
    "it, and no (tracking ID, email) pair repeats.",
)
def mailboxes(context: AssetCheckExecutionContext) -> AssetCheckResult:
    company_emails = _read(context, "company_emails")
    emails = company_emails["email"].fillna("").tolist()
    domains = company_emails["domain"].fillna("").str.lower().tolist()
    syntax_ok = [bool(EMAIL_SYNTAX.match(email)) for email in emails]
    at = [email.rpartition("@")[2].lower() for email in emails]
    under = [a == d or a.endswith("." + d) for a, d in zip(at, domains, strict=True)]
    bad_syntax = _rows(company_emails, [not ok for ok in syntax_ok])
    elsewhere = _rows(company_emails, [not ok for ok in under])
    duplicated = company_emails[company_emails.duplicated(["tracking_id", "email"], keep=False)]
    return AssetCheckResult(
        passed=bad_syntax.empty and duplicated.empty,
        # Another domain is flagged, not failed: companies do use a second domain for mail.
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "mailboxes": len(company_emails),
            "invalid_syntax": len(bad_syntax),
            "invalid_syntax_examples": MetadataValue.json(
                bad_syntax["email"].head(EXAMPLES_SHOWN).tolist()
            ),
            "other_domain": len(elsewhere),
            "other_domain_examples": MetadataValue.json(
                (elsewhere["email"] + " for " + elsewhere["domain"]).head(EXAMPLES_SHOWN).tolist()
            ),
            "duplicate_pairs": len(duplicated),
        },
    )


def _rows(frame: pd.DataFrame, mask: list[bool]) -> pd.DataFrame:
    """The rows where mask is true (a plain list would select columns on an empty frame)."""
    return frame.loc[pd.Series(mask, index=frame.index, dtype=bool)]


def _schema_check(frame: pd.DataFrame, schema) -> AssetCheckResult:
    try:
        to_arrow(frame, schema)
        problem = None
    except (ValueError, TypeError) as error:
        problem = str(error)
    unexpected = [name for name in frame.columns if name not in schema.names]
    return AssetCheckResult(
        passed=problem is None and not unexpected,
        metadata={
            "columns": len(frame.columns),
            "unexpected_columns": MetadataValue.json(unexpected),
            "problem": problem or "",
        },
    )


@asset_check(
    partitions_def=domain_tables_partitions,
    asset="domain_lookups",
    name="schema",
    description="Columns and types are the documented ones.",
)
def domain_lookups_schema(context: AssetCheckExecutionContext) -> AssetCheckResult:
    return _schema_check(_read(context, "domain_lookups"), DOMAIN_LOOKUPS_SCHEMA)


@asset_check(
    partitions_def=domain_tables_partitions,
    asset="company_emails",
    name="schema",
    description="Columns and types are the documented ones.",
)
def company_emails_schema(context: AssetCheckExecutionContext) -> AssetCheckResult:
    return _schema_check(_read(context, "company_emails"), COMPANY_EMAILS_SCHEMA)


ASSET_CHECKS = [lineage, mailboxes, domain_lookups_schema, company_emails_schema]
