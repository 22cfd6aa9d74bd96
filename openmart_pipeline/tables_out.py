"""Building the output tables: one row per input row, and one per mailbox found.

Results are joined to rows by lookup ID (the tracking ID sent to the API), never by
position, so rows that share a lookup each get their own row and their own mailboxes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from dagster import MetadataValue, TableColumn, TableSchema

# TableMetadataSet is not re-exported from dagster's top level in 1.13.
from dagster._core.definitions.metadata import TableMetadataSet

from openmart_pipeline.lookups import (
    BatchRunReport,
    Lookup,
    LookupPlan,
    LookupResult,
    lookup_id_for,
)
from openmart_pipeline.schemas import COMPANY_EMAILS_SCHEMA, DOMAIN_LOOKUPS_SCHEMA

NOT_WORKED = LookupResult(status="pending", message="the run ended before this lookup was worked")


def row_lookup_id(row) -> str | None:
    """The lookup ID of an accepted input row, None for a rejected one."""
    if isinstance(row.reason, str):
        return None
    return lookup_id_for(
        row.domain, row.company_name, _text(row.city), _text(row.state), _text(row.country)
    )


def lookups_of(table: pd.DataFrame) -> dict[str, Lookup]:
    """The distinct lookups of a domain table's accepted rows, keyed by lookup ID."""
    found: dict[str, Lookup] = {}
    for row in table.itertuples(index=False):
        lookup_id = row_lookup_id(row)
        if lookup_id is not None and lookup_id not in found:
            found[lookup_id] = Lookup(
                lookup_id,
                row.domain,
                row.company_name.strip(),
                _text(row.city),
                _text(row.state),
                _text(row.country),
            )
    return found


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def build_output_tables(
    domain_table: pd.DataFrame, results: Mapping[str, LookupResult], run_id: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (domain_lookups, company_emails) for one domain table and its results."""
    lookup_rows = []
    email_rows = []
    for row in domain_table.itertuples(index=False):
        lookup_id = row_lookup_id(row)
        result = None if lookup_id is None else results.get(lookup_id, NOT_WORKED)
        lookup_rows.append(
            {
                "tracking_id": row.tracking_id,
                "source_file": row.source_file,
                "row_number": row.row_number,
                "website": row.website,
                "company_name": row.company_name,
                "domain": row.domain,
                "status": "rejected" if result is None else result.status,
                "reason": row.reason if result is None else None,
                "message": row.message if result is None else result.message,
                "mailbox_count": 0 if result is None else len(result.mailboxes),
                "lookup_id": lookup_id,
                "batch_id": None if result is None else result.batch_id,
                "task_id": None if result is None else result.task_id,
                "lookup_time": None if result is None else result.lookup_time,
                "carried_over": False if result is None else result.carried_over,
                "run_id": run_id,
            }
        )
        if result is None:
            continue
        for email, email_status in result.mailboxes:
            email_rows.append(
                {
                    "tracking_id": row.tracking_id,
                    "domain": row.domain,
                    "company_name": row.company_name,
                    "email": email,
                    "email_status": email_status,
                    "batch_id": result.batch_id,
                    "task_id": result.task_id,
                    "lookup_time": result.lookup_time,
                    "run_id": run_id,
                }
            )
    lookups = pd.DataFrame(lookup_rows, columns=DOMAIN_LOOKUPS_SCHEMA.names)
    emails = pd.DataFrame(email_rows, columns=COMPANY_EMAILS_SCHEMA.names)
    return lookups, emails


def table_schema(schema) -> TableSchema:
    """A Dagster TableSchema for one of the package's pyarrow schemas."""
    return TableSchema(columns=[TableColumn(name=f.name, type=str(f.type)) for f in schema])


def output_metadata(
    lookups: pd.DataFrame,
    emails: pd.DataFrame,
    plan: LookupPlan,
    reports: Sequence[BatchRunReport],
) -> dict[str, dict[str, object]]:
    """Metadata for both outputs: counts the UI can plot, the schema and a preview."""
    by_status = {k: int(v) for k, v in lookups["status"].value_counts().items()}
    by_reason = {k: int(v) for k, v in lookups["reason"].dropna().value_counts().items()}
    by_email_status = {
        str(k): int(v) for k, v in emails["email_status"].fillna("(none)").value_counts().items()
    }
    answered = by_status.get("found", 0) + by_status.get("not_found", 0)
    sent = sum(r.lookups_sent for r in reports)
    common = {
        "lookups_sent": sent,
        "lookups_carried_over": int(lookups["carried_over"].sum()),
        "batches_submitted": sum(r.batches_submitted for r in reports),
        "batches_resumed": sum(r.batches_adopted for r in reports),
        "estimated_credits_spent": sent,
        "credit_balance_before": plan.balance if plan.balance is not None else -1,
    }
    lookup_meta = {
        **TableMetadataSet(
            row_count=len(lookups), column_schema=table_schema(DOMAIN_LOOKUPS_SCHEMA)
        ),
        **common,
        **{f"lookups_{status}": count for status, count in by_status.items()},
        "lookups_by_status": MetadataValue.json(by_status),
        "rejects_by_reason": MetadataValue.json(by_reason),
        "hit_rate": round(by_status.get("found", 0) / answered, 4) if answered else 0.0,
        "preview": MetadataValue.md(_preview(lookups, ["tracking_id", "domain", "status"])),
    }
    email_meta = {
        **TableMetadataSet(
            row_count=len(emails), column_schema=table_schema(COMPANY_EMAILS_SCHEMA)
        ),
        **common,
        "mailboxes_by_email_status": MetadataValue.json(by_email_status),
        "preview": MetadataValue.md(_preview(emails, ["tracking_id", "email", "email_status"])),
    }
    return {"domain_lookups": lookup_meta, "company_emails": email_meta}


def _preview(frame: pd.DataFrame, columns: list[str], rows: int = 10) -> str:
    head = frame[columns].head(rows).fillna("")
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(v) for v in record) + " |" for record in head.values]
    return "\n".join(lines)
