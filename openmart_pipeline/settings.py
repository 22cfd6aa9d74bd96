"""Settings read from the environment, with the defaults a fresh clone runs on.

| variable | default | what it sets |
| --- | --- | --- |
| OPENMART_API_KEY | (none) | the key, sent only in the X-API-Key header |
| OPENMART_BASE_URL | https://api.openmart.ai | the API (or the emulator on loopback) |
| OPENMART_DOMAINS_PATH | data/domains | a domain table, or a folder of them |
| OPENMART_OUTPUT_PATH | data/output | the Parquet tables (a folder or s3://, gs://...) |
| OPENMART_LEDGER_URL | (SQLite beside the outputs) | a database for the ledger |
| OPENMART_POLL_INTERVAL_SECONDS | 2 | first wait between status reads |
| OPENMART_POLL_DEADLINE_SECONDS | 3600 | longest wait for a batch before it is left pending |
| OPENMART_MAX_SUBMISSIONS_IN_FLIGHT | 8 | submissions held by the server at once |
| OPENMART_READS_PER_SECOND | 20 | reads started per second |
| OPENMART_READ_TIMEOUT_SECONDS | 20 | timeout of one read |
| OPENMART_RETRY_INITIAL_SECONDS | 0.5 | first backoff wait of a retried request |
| OPENMART_CLAIM_LEASE_SECONDS | 600 | trust in another host's unfinished claim |
"""

from __future__ import annotations

import os
from pathlib import Path

DOMAIN_TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")


def env_text(name: str, default: str) -> str:
    """An environment variable's text, or the default when it is unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or default


def env_number(name: str, default: float) -> float:
    """An environment variable read as a positive number.

    Raises:
        ValueError: naming the variable and the value when it is not a positive number.
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be greater than 0, got {text!r}")
    return value


def domains_path() -> Path:
    return Path(env_text("OPENMART_DOMAINS_PATH", "data/domains"))


def output_path() -> str:
    return env_text("OPENMART_OUTPUT_PATH", "data/output")


def is_local(path: str) -> bool:
    """True for a local folder, False for a URL such as s3://bucket/prefix."""
    return "://" not in path or path.startswith("file://")


def ledger_location() -> str:
    """Where the ledger lives: OPENMART_LEDGER_URL, or an SQLite file beside local outputs.

    Raises:
        ValueError: when the outputs are remote and no ledger database is configured, since
            an SQLite file cannot be shared through object storage.
    """
    url = env_text("OPENMART_LEDGER_URL", "")
    if url:
        return url
    output = output_path()
    if not is_local(output):
        raise ValueError(
            f"OPENMART_OUTPUT_PATH is {output!r}, not a local folder: set OPENMART_LEDGER_URL "
            "to a database every run can reach (e.g. postgresql://user@host/openmart), so runs "
            "on different machines share one ledger"
        )
    return str(Path(output.removeprefix("file://")) / "ledger.sqlite")


def domain_files(path: Path | None = None) -> dict[str, Path]:
    """The domain tables under OPENMART_DOMAINS_PATH, keyed by file name (the partition).

    Raises:
        FileNotFoundError: when the path does not exist, saying which variable sets it.
    """
    path = path or domains_path()
    if path.is_file():
        return {path.name: path}
    if not path.is_dir():
        raise FileNotFoundError(
            f"OPENMART_DOMAINS_PATH points at {str(path)!r}, which does not exist: set it to "
            "a CSV or Parquet file of companies, or a folder of them"
        )
    return {
        child.name: child
        for child in sorted(path.iterdir())
        if child.is_file()
        and child.suffix.lower() in DOMAIN_TABLE_SUFFIXES
        and not child.name.startswith(".")
    }
