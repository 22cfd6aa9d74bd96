"""Read a domain table (CSV or Parquet) into one checked row per company.

A domain table is the input of a run: one row per company, with at least a website
column and usually a company name. :func:`read_domain_table` reads it as text, finds
the columns by their usual names, turns every website into a root domain with
:func:`~openmart_pipeline.domains.normalize_website`, gives each row a tracking ID and
rejects, row by row, what the lookup API would refuse. No row is dropped: a row the
API may receive has ``reason`` None; every other row carries a reason and a message.

The returned frame has exactly the columns of :data:`LOOKUP_COLUMNS`, one row per
input data row, in file order:

=============  ======  ==============================================================
column         type    meaning
=============  ======  ==============================================================
tracking_id    str     the row's ``tracking_id`` cell as given, or a generated stable ID
source_file    str     the file's name, without its directory
row_number     int64   1-based data row; the header is not counted, blank lines neither
website        str     the website cell exactly as given ("" when the cell is empty)
company_name   str     trimmed company name, or None
city           str     trimmed, or None
state          str     trimmed, or None
country        str     trimmed, or None
domain         str     registrable domain, e.g. ``acme.com``, or None
reason         str     why the row must not be sent (see :data:`ROW_REASONS`), or None
message        str     what is wrong and how to fix it, naming row and column, or None
=============  ======  ==============================================================

Text columns have ``object`` dtype holding ``str`` or ``None``, so a missing value is
``None`` rather than NaN. A ``hosted_site`` row keeps the host's domain in ``domain``
for the record; like any row with a reason, it is not sent.

Example:
    >>> table = read_domain_table("companies.csv", column_map={"domain": "Web Address"})
    >>> ready = table[table["reason"].isna()]
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from openmart_pipeline.domains import (
    WEBSITE_REASONS,
    display_name_from_domain,
    normalize_website,
)

LOOKUP_COLUMNS = (
    "tracking_id",
    "source_file",
    "row_number",
    "website",
    "company_name",
    "city",
    "state",
    "country",
    "domain",
    "reason",
    "message",
)
"""Columns of the frame :func:`read_domain_table` returns, in order."""

TASK_FIELDS = ("domain", "company_name", "city", "state", "country", "tracking_id")
"""Columns that become the fields of one lookup task sent to the API."""

MISSING_COMPANY_NAME = "missing_company_name"
DUPLICATE_TRACKING_ID = "duplicate_tracking_id"

ROW_REASONS = (*WEBSITE_REASONS, MISSING_COMPANY_NAME, DUPLICATE_TRACKING_ID)
"""Every reason code a row of a domain table can be rejected with."""

COLUMN_MAP_ENV_VAR = "OPENMART_COLUMN_MAP"
"""Environment variable a deployment may use to pass a column map as text."""

COLUMN_ALIASES: Mapping[str, tuple[str, ...]] = {
    "tracking_id": ("tracking_id", "trackingid"),
    "domain": (
        "domain",
        "website",
        "url",
        "homepage",
        "site",
        "web",
        "company_domain",
        "company_website",
        "website_url",
        "web_address",
        "company_url",
        "domain_name",
    ),
    "company_name": (
        "company_name",
        "company",
        "name",
        "organization",
        "organisation",
        "organization_name",
        "account_name",
        "business_name",
    ),
    "city": ("city", "town"),
    "state": ("state", "region", "province", "state_province", "state_region"),
    "country": ("country", "country_name", "country_code"),
}
"""Column names recognized for each canonical column, compared case-insensitively with
spaces, hyphens and other punctuation read as underscores ("Company Name" is
``company_name``). Earlier names win when a table has several."""

_PARQUET_SUFFIXES = (".parquet", ".pq")
_DELIMITERS = (",", ";", "\t")
_TRACKING_ID_LENGTH = 16
_PANDAS_INDEX_COLUMN = re.compile(r"__index_level_\d+__")


class DomainTableError(ValueError):
    """The table as a whole cannot be read: wrong encoding, no website column, bad map."""


def read_domain_table(
    path: str | os.PathLike[str],
    column_map: Mapping[str, str] | None = None,
    company_name_from_domain: bool = False,
    hosted_domains: frozenset[str] | None = None,
) -> pd.DataFrame:
    """Read a CSV or Parquet domain table and check every row for the lookup.

    CSV files must be UTF-8 (a byte-order mark is fine); the delimiter (comma,
    semicolon or tab) is the one that splits the header row into the most columns.
    Files ending in ``.parquet`` or ``.pq`` are read as Parquet. Every cell is read as
    text, so ``007`` keeps its zeros and ``NA`` stays a name. Rows whose cells are all
    empty (blank lines, a spreadsheet's trailing ``,,,``) hold no company and are
    skipped; they are not counted in ``row_number``.

    Columns are found by the names in :data:`COLUMN_ALIASES`. Rows are checked in this
    order, and the first problem found is the row's reason: a tracking ID already used
    by an earlier row (``duplicate_tracking_id``), the website (every reason of
    :func:`~openmart_pipeline.domains.normalize_website`), then an empty company name
    (``missing_company_name``). The API itself only refuses a task without a domain or
    without a company name, so a row with no reason passes its validation.

    A row without a ``tracking_id`` cell gets a generated one: 16 hex digits of a
    SHA-256 over the file name and the row's trimmed website, company name, city, state
    and country. It does not change when other rows are added, removed or reordered.
    Identical rows get ``-2``, ``-3`` ... appended in the order they appear.

    Args:
        path: The CSV or Parquet file.
        column_map: Canonical column name (``domain``, ``company_name``, ``city``,
            ``state``, ``country``, ``tracking_id``) to the table's column name. It wins
            over the name guessing. :func:`parse_column_map` reads it from text.
        company_name_from_domain: Derive a missing company name from the domain
            (``acme-tools.com`` gives ``Acme Tools``) instead of rejecting the row.
        hosted_domains: Domains flagged as ``hosted_site``; None uses the bundled list
            (see :func:`~openmart_pipeline.domains.load_hosted_domains`).

    Returns:
        One row per data row, in file order, with the columns of :data:`LOOKUP_COLUMNS`.

    Raises:
        DomainTableError: The file is not UTF-8, not a readable table, has no header,
            has no website column, or ``column_map`` names an unknown column.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    cells = _read_cells(path)
    columns = _resolve_columns(list(cells), column_map, path.name)
    return _check_rows(path.name, cells, columns, company_name_from_domain, hosted_domains)


def parse_column_map(text: str) -> dict[str, str]:
    """Read a column map written as text, such as ``domain=Web Address,company_name=Account``.

    This is the form a deployment can put in the ``OPENMART_COLUMN_MAP`` environment
    variable. Column names cannot contain ``,`` or ``=`` in this form.

    Args:
        text: Comma-separated ``canonical=column`` pairs; spaces around names are
            ignored; empty text gives an empty map.

    Returns:
        The map, ready for :func:`read_domain_table`.

    Raises:
        DomainTableError: A pair has no ``=`` or an empty side, or names an unknown
            canonical column.
    """
    mapping: dict[str, str] = {}
    for pair in text.split(","):
        if not pair.strip():
            continue
        canonical, sep, column = (part.strip() for part in pair.partition("="))
        if not sep or not canonical or not column:
            raise DomainTableError(
                f"column map entry {pair.strip()!r} is not canonical=column; write it like "
                "domain=Web Address,company_name=Account"
            )
        mapping[canonical] = column
    _check_canonical_names(mapping)
    return mapping


def _read_cells(path: Path) -> dict[str, list[str]]:
    """Read the file as text cells: column name to the column's values, "" when empty."""
    if path.suffix.lower() in _PARQUET_SUFFIXES:
        return _read_parquet_cells(path)
    return _read_csv_cells(path)


def _read_csv_cells(path: Path) -> dict[str, list[str]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DomainTableError(
            f"{path.name} is not UTF-8: byte 0x{data[err.start]:02X} at byte offset "
            f"{err.start} (line {line}) is not valid UTF-8. Re-save the file as UTF-8 "
            "(in Excel: Save As, 'CSV UTF-8'; in LibreOffice: character set 'Unicode "
            "(UTF-8)') and run again."
        ) from err
    if not text.strip():
        raise DomainTableError(
            f"{path.name} is empty: it needs a header row naming the columns, e.g. "
            "company_name,website, and one row per company."
        )

    delimiter = _sniff_delimiter(text)
    # strict: a stray quote is an error naming its line, not a field that silently
    # swallows the rows after it.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as err:
        raise DomainTableError(
            f"{path.name}, line {reader.line_num}: {err}. Check the quotes on that line: a "
            'value holding the delimiter or a quote must be quoted, with quotes doubled ("").'
        ) from err

    (_, header), data_rows = rows[0], rows[1:]
    names = _unique_column_names(header)
    cells: dict[str, list[str]] = {name: [] for name in names}
    for line, row in data_rows:
        extra = [cell for cell in row[len(names) :] if cell.strip()]
        if extra:
            raise DomainTableError(
                f"{path.name}, line {line}: the row has {len(row)} fields but the header has "
                f"{len(names)}; quote values that contain {delimiter!r} or add the missing "
                "column names to the header."
            )
        row = row + [""] * (len(names) - len(row))
        for name, cell in zip(names, row, strict=False):
            cells[name].append(cell)
    return cells


def _unique_column_names(header: list[str]) -> list[str]:
    """Name unnamed columns and tell repeated names apart, so no column is lost."""
    names: list[str] = []
    for position, name in enumerate(header, start=1):
        name = name or f"unnamed_{position}"
        unique, copy = name, 1
        while unique in names:
            copy += 1
            unique = f"{name}_{copy}"
        names.append(unique)
    return names


def _sniff_delimiter(text: str) -> str:
    """Pick the delimiter that splits the header row into the most columns.

    Only the header is used: column names rarely hold a delimiter, while a value may
    (a stray tab, a semicolon in a company name), so the header decides reliably.
    """
    header = next(line for line in text.splitlines() if line.strip())
    counts = {sep: len(next(csv.reader([header], delimiter=sep))) for sep in _DELIMITERS}
    return max(_DELIMITERS, key=lambda sep: counts[sep])


def _read_parquet_cells(path: Path) -> dict[str, list[str]]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise DomainTableError(f"{path.name} cannot be read as Parquet: {err}") from err
    names = _unique_column_names([str(name) for name in table.column_names])
    return {
        name: _text_values(table.column(index))
        for index, name in enumerate(names)
        # pandas stores a non-default index as an extra column; it is not table data
        if not _PANDAS_INDEX_COLUMN.fullmatch(name)
    }


def _text_values(column: pa.ChunkedArray) -> list[str]:
    """Give a Parquet column's values as text, "" for nulls; numbers keep their digits."""
    try:
        values = pc.cast(column, pa.string()).to_pylist()
    except pa.ArrowException:  # nested types (lists, structs) have no cast to text
        values = [None if value is None else str(value) for value in column.to_pylist()]
    return ["" if value is None else value for value in values]


def _resolve_columns(
    columns: Sequence[str], column_map: Mapping[str, str] | None, file_name: str
) -> dict[str, str | None]:
    """Match canonical column names to the table's columns; the map wins over guessing."""
    column_map = dict(column_map or {})
    _check_canonical_names(column_map)
    resolved: dict[str, str | None] = dict.fromkeys(COLUMN_ALIASES)

    for canonical, wanted in column_map.items():
        resolved[canonical] = _find_mapped_column(columns, canonical, wanted, file_name)

    used = {column for column in resolved.values() if column is not None}
    by_key = [(column, _column_key(column)) for column in columns]
    for canonical, aliases in COLUMN_ALIASES.items():
        if canonical in column_map:
            continue
        for alias in aliases:
            match = next((c for c, key in by_key if key == alias and c not in used), None)
            if match is not None:
                resolved[canonical] = match
                used.add(match)
                break

    if resolved["domain"] is None:
        # Suggest a column nothing else claimed, so the example is never the name column.
        unclaimed = [c for c in columns if c not in used]
        example = unclaimed[0] if unclaimed else "Web Address"
        raise DomainTableError(
            f"{file_name} has no website column. Its columns are: "
            f"{', '.join(repr(c) for c in columns) or '(none)'}. Say which column holds each "
            f"company's website with column_map={{'domain': '<your column>'}}, e.g. "
            f"column_map={{'domain': {example!r}}}, or {COLUMN_MAP_ENV_VAR}='domain={example}' "
            f"in the environment. Names found without a map: "
            f"{', '.join(COLUMN_ALIASES['domain'])}."
        )
    return resolved


def _find_mapped_column(columns: Sequence[str], canonical: str, wanted: str, source: str) -> str:
    """Find the column a column_map entry names: exact name first, then ignoring case."""
    if wanted in columns:
        return wanted
    wanted_key = _column_key(wanted)
    for column in columns:
        if _column_key(column) == wanted_key:
            return column
    raise DomainTableError(
        f"column_map maps {canonical!r} to {wanted!r}, but {source} has no such column. "
        f"Its columns are: {', '.join(repr(c) for c in columns) or '(none)'}."
    )


def _check_canonical_names(column_map: Mapping[str, str]) -> None:
    unknown = sorted(set(column_map) - set(COLUMN_ALIASES))
    if unknown:
        raise DomainTableError(
            f"column_map has unknown names {', '.join(map(repr, unknown))}; the names it "
            f"can map are: {', '.join(COLUMN_ALIASES)}."
        )


def _column_key(name: str) -> str:
    """Compare column names ignoring case, surrounding space and punctuation style."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().casefold()).strip("_")


def _check_rows(
    file_name: str,
    cells: Mapping[str, list[str]],
    columns: Mapping[str, str | None],
    company_name_from_domain: bool,
    hosted_domains: frozenset[str] | None,
) -> pd.DataFrame:
    """Normalize, identify and check each row; build the frame of LOOKUP_COLUMNS."""
    row_count = len(next(iter(cells.values()), []))

    def column(canonical: str) -> list[str]:
        name = columns[canonical]
        return cells[name] if name is not None else [""] * row_count

    websites = column("domain")
    names = [_trimmed(value) for value in column("company_name")]
    cities = [_trimmed(value) for value in column("city")]
    states = [_trimmed(value) for value in column("state")]
    countries = [_trimmed(value) for value in column("country")]
    given_ids = column("tracking_id")

    tracking_ids = _tracking_ids(file_name, given_ids, websites, names, cities, states, countries)
    first_row_of_id: dict[str, int] = {}
    out: dict[str, list[object]] = {name: [] for name in LOOKUP_COLUMNS}

    for index in range(row_count):
        row_number = index + 1
        tracking_id = tracking_ids[index]
        result = normalize_website(websites[index], hosted_domains)
        name = names[index]
        if name is None and company_name_from_domain and result.reason is None:
            name = display_name_from_domain(result.domain)

        reason, message = None, None
        earlier_row = first_row_of_id.setdefault(tracking_id, row_number)
        if earlier_row != row_number:
            reason = DUPLICATE_TRACKING_ID
            message = (
                f"Row {row_number}, column {columns['tracking_id']!r}: tracking ID "
                f"{tracking_id!r} is already used by row {earlier_row}; give each row its own "
                "tracking ID, or leave the cell empty to get a generated one. This row is "
                f"listed as {tracking_id}~row{row_number} so that no two rows share an ID."
            )
            # Every output row keeps a unique key, so no join can mix this row's fate with
            # the row that owns the ID.
            tracking_id = f"{tracking_id}~row{row_number}"
        elif result.reason is not None:
            reason = result.reason
            message = f"Row {row_number}, column {columns['domain']!r}: {result.message}"
        elif name is None:
            reason = MISSING_COMPANY_NAME
            message = _missing_name_message(row_number, columns["company_name"])

        row = {
            "tracking_id": tracking_id,
            "source_file": file_name,
            "row_number": row_number,
            "website": websites[index],
            "company_name": name,
            "city": cities[index],
            "state": states[index],
            "country": countries[index],
            "domain": result.domain,
            "reason": reason,
            "message": message,
        }
        for key, value in row.items():
            out[key].append(value)

    return pd.DataFrame(
        {
            key: pd.Series(values, dtype="int64" if key == "row_number" else object)
            for key, values in out.items()
        },
        columns=list(LOOKUP_COLUMNS),
    )


def _tracking_ids(file_name: str, given: list[str], *fields: list[str | None]) -> list[str]:
    """Keep given tracking IDs; generate stable ones for rows whose cell is empty."""
    taken = {value for value in given if value.strip()}
    generated: dict[str, int] = {}
    ids = []
    for index, value in enumerate(given):
        if value.strip():
            ids.append(value)
            continue
        parts = [file_name, *(field[index] or "" for field in fields)]
        digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
        base = digest[:_TRACKING_ID_LENGTH]
        candidate = base
        while candidate in taken:
            generated[base] = generated.get(base, 1) + 1
            candidate = f"{base}-{generated[base]}"
        taken.add(candidate)
        ids.append(candidate)
    return ids


def _missing_name_message(row_number: int, name_column: str | None) -> str:
    if name_column is None:
        return (
            f"Row {row_number}: the table has no company-name column; add one (e.g. "
            "company_name), map it with column_map={'company_name': '<your column>'}, or "
            "turn on company_name_from_domain to derive names from the domains."
        )
    return (
        f"Row {row_number}, column {name_column!r}: the company name is empty; fill in the "
        "company's name, or turn on company_name_from_domain to derive it from the domain."
    )


def _trimmed(value: str) -> str | None:
    value = value.strip()
    return value or None
