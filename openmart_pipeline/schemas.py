"""The columns and types of every table the package writes, as explicit pyarrow schemas.

Writing through these schemas keeps strings as strings (a tracking ID "007" stays "007")
and gives a table with no rows every column with its type.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

UTC_TIME = pa.timestamp("us", tz="UTC")

DOMAIN_TABLE_SCHEMA = pa.schema(
    [
        pa.field("tracking_id", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("row_number", pa.int64(), nullable=False),
        pa.field("website", pa.string()),
        pa.field("company_name", pa.string()),
        pa.field("city", pa.string()),
        pa.field("state", pa.string()),
        pa.field("country", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("message", pa.string()),
    ]
)

DOMAIN_LOOKUPS_SCHEMA = pa.schema(
    [
        pa.field("tracking_id", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("row_number", pa.int64(), nullable=False),
        pa.field("website", pa.string()),
        pa.field("company_name", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("message", pa.string()),
        pa.field("mailbox_count", pa.int32(), nullable=False),
        pa.field("lookup_id", pa.string()),
        pa.field("batch_id", pa.string()),
        pa.field("task_id", pa.string()),
        pa.field("lookup_time", UTC_TIME),
        pa.field("carried_over", pa.bool_(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ]
)

COMPANY_EMAILS_SCHEMA = pa.schema(
    [
        pa.field("tracking_id", pa.string(), nullable=False),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("company_name", pa.string()),
        pa.field("email", pa.string(), nullable=False),
        pa.field("email_status", pa.string()),
        pa.field("batch_id", pa.string()),
        pa.field("task_id", pa.string()),
        pa.field("lookup_time", UTC_TIME),
        pa.field("run_id", pa.string(), nullable=False),
    ]
)

SCHEMAS = {
    "domain_table": DOMAIN_TABLE_SCHEMA,
    "domain_lookups": DOMAIN_LOOKUPS_SCHEMA,
    "company_emails": COMPANY_EMAILS_SCHEMA,
}


def to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Convert a frame to a table of exactly `schema`'s columns, in order, with its types.

    Raises:
        ValueError: when a column is missing or a value does not fit its type.
    """
    missing = [name for name in schema.names if name not in frame.columns]
    if missing:
        raise ValueError(f"the table lacks the column(s) {missing}")
    arrays = []
    for schema_field in schema:
        values = frame[schema_field.name].tolist()
        values = [None if _is_missing(value) else value for value in values]
        arrays.append(pa.array(values, type=schema_field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _is_missing(value: object) -> bool:
    return (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, float) and value != value)
    )
