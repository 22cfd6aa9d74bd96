"""The `openmart-pipeline` command: `run` the lookups through Dagster, or serve the `emulator`.

`run` materializes every domain table found under OPENMART_DOMAINS_PATH (one partition
each) in the Dagster instance under DAGSTER_HOME, so the runs appear in the UI afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from openmart_pipeline.emulator import cli as emulator_cli

PLAN_OP_CONFIG_PATH = ("ops", "openmart_lookups", "ops", "plan_batches", "config")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="openmart-pipeline",
        description="Look up companies' shared mailboxes with Openmart's batch API.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="materialize the lookups of every domain table")
    run.add_argument(
        "--partition",
        action="append",
        default=[],
        help="only this domain table (file name); repeatable",
    )
    run.add_argument(
        "--force-refresh",
        action="store_true",
        help="send every lookup again, even those with a fresh result",
    )
    run.add_argument(
        "--refresh-after-days",
        type=_non_negative(float),
        default=30.0,
        help="reuse results younger than this (default: %(default)s)",
    )
    run.add_argument(
        "--max-lookups",
        type=_non_negative(int),
        default=None,
        help="send at most this many lookups; the rest are over_budget",
    )
    run.add_argument(
        "--retry-errored",
        action="store_true",
        help="send again lookups whose last result was errored or cancelled (they are "
        "otherwise kept like any result younger than --refresh-after-days)",
    )
    run.add_argument(
        "--resubmit-unknown",
        action="store_true",
        help="send again lookups whose earlier submission has an unknown outcome (MAY PAY TWICE)",
    )
    run.add_argument(
        "--company-name-from-domain",
        action="store_true",
        help="derive a missing company name from the domain instead of rejecting",
    )

    emulator = commands.add_parser("emulator", help="serve the API emulator on loopback")
    emulator_cli.configure_parser(emulator)

    args = parser.parse_args(argv)
    if args.command == "emulator":
        return emulator_cli.run_from_args(args)
    return run_command(args)


def _non_negative(kind):
    """An argparse type: a number of `kind` that is zero or more."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text} is negative; give 0 or more")
        return value

    return parse


DEFAULT_INSTANCE_CONFIG = """\
# Written by openmart-pipeline for its default DAGSTER_HOME; edit freely.
# One submit-and-wait step at a time across runs keeps them within the API's read rate.
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
nux:
  enabled: false
"""


def prepare_default_home(home: Path) -> Path:
    """Create the package's default DAGSTER_HOME, with its dagster.yaml when it has none."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DEFAULT_INSTANCE_CONFIG)
    return home


def run_command(args: argparse.Namespace) -> int:
    """Materialize the lookup assets for each domain table; 0 when every run succeeded."""
    if not os.environ.get("OPENMART_API_KEY", "").strip():
        print(
            "error: OPENMART_API_KEY is not set. Export the key of your Openmart account "
            "(or the emulator's key) and run again.",
            file=sys.stderr,
        )
        return 2
    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(prepare_default_home(Path(".dagster_home").resolve()))
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)

    # Imported here so that a bad setting is reported as a message, not an import traceback.
    try:
        from openmart_pipeline.definitions import LOOKUP_JOB_NAME, defs
        from openmart_pipeline.resources.openmart import DEFAULT_BASE_URL, check_base_url
        from openmart_pipeline.settings import (
            DOMAIN_TABLE_SUFFIXES,
            domain_files,
            domains_path,
            env_text,
            output_path,
        )

        check_base_url(env_text("OPENMART_BASE_URL", DEFAULT_BASE_URL))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from dagster import DagsterInstance

    from openmart_pipeline.assets import domain_tables_partitions

    try:
        files = domain_files()
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    keys = args.partition or list(files)
    if not files:
        print(
            f"error: OPENMART_DOMAINS_PATH ({domains_path()}) holds no domain table: put CSV "
            f"or Parquet files there ({', '.join(DOMAIN_TABLE_SUFFIXES)})",
            file=sys.stderr,
        )
        return 2
    unknown = [key for key in keys if key not in files]
    if unknown or not keys:
        print(
            f"error: no domain table named {', '.join(unknown) or '(any)'} under "
            f"OPENMART_DOMAINS_PATH; found: {', '.join(files) or 'nothing'}",
            file=sys.stderr,
        )
        return 2

    instance = DagsterInstance.get()
    known = set(instance.get_dynamic_partitions(domain_tables_partitions.name))
    new = [key for key in files if key not in known]
    if new:
        instance.add_dynamic_partitions(domain_tables_partitions.name, new)

    job = defs.resolve_job_def(LOOKUP_JOB_NAME)
    run_config = _run_config(args)
    failed = []
    for key in keys:
        print(f"== {key}: materializing (DAGSTER_HOME={home})", file=sys.stderr)
        result = job.execute_in_process(
            instance=instance, partition_key=key, run_config=run_config, raise_on_error=False
        )
        metadata = _materialization_metadata(result, "domain_lookups")
        if metadata is None:
            print(f"{key}: this run wrote no tables", file=sys.stderr)
        else:
            _print_summary(key, output_path(), metadata)
        if not result.success:
            failed.append(key)
            for message in _failure_messages(result):
                print(f"error: {key}: {message}", file=sys.stderr)
            print(
                f"run {result.run_id} failed; see it in the Dagster UI (dagster dev)",
                file=sys.stderr,
            )
    return 1 if failed else 0


def _run_config(args: argparse.Namespace) -> dict:
    plan_config = {
        "force_refresh": args.force_refresh,
        "refresh_after_days": args.refresh_after_days,
        "resubmit_unknown": args.resubmit_unknown,
        "retry_errored": args.retry_errored,
        "max_lookups_per_run": args.max_lookups,
    }
    config: dict = {
        "ops": {
            "domain_table": {"config": {"company_name_from_domain": args.company_name_from_domain}}
        }
    }
    config["ops"]["openmart_lookups"] = {"ops": {"plan_batches": {"config": plan_config}}}
    # Progress and problems on the terminal; every event is still in the Dagster UI.
    config["loggers"] = {"console": {"config": {"log_level": "INFO"}}}
    return config


def _failure_messages(result) -> list[str]:
    messages = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            # A user-code error is wrapped by Dagster; its cause says what happened.
            while error.cause is not None and "DagsterExecutionStepExecutionError" in error.message:
                error = error.cause
            messages.append(f"{event.step_key}: {error.message.strip()}")
    return messages or ["the run failed; see its logs in the Dagster UI"]


def _materialization_metadata(result, asset: str) -> dict | None:
    """The metadata of the run's materialization of `asset`, or None if it wrote none."""
    for event in result.all_events:
        if event.is_step_materialization:
            materialization = event.step_materialization_data.materialization
            if materialization.asset_key.path[-1] == asset:
                return {name: value.value for name, value in materialization.metadata.items()}
    return None


def _print_summary(partition: str, output: str, metadata: dict) -> None:
    """Print what the run's tables hold for one partition, and what the run sent."""
    from openmart_pipeline.io_manager import read_table

    try:
        lookups = read_table(output, "domain_lookups", partition)
    except FileNotFoundError:
        print(f"{partition}: no domain_lookups table was written", file=sys.stderr)
        return
    try:
        mailboxes = len(read_table(output, "company_emails", partition))
    except FileNotFoundError:
        mailboxes = 0
    statuses = lookups["status"].value_counts()
    sent = metadata.get("lookups_sent", 0)
    print(
        f"{partition}: input rows {len(lookups)}; distinct lookups sent this run {sent}; "
        f"carried over {int(lookups['carried_over'].sum())} rows; mailboxes found "
        f"{mailboxes}; rejects {int(statuses.get('rejected', 0))}"
    )
    print(f"{partition}: rows by status: " + ", ".join(f"{k} {v}" for k, v in statuses.items()))
    reasons = lookups["reason"].dropna().value_counts()
    if len(reasons):
        by_reason = ", ".join(f"{k} {v}" for k, v in reasons.items())
        print(f"{partition}: rejects by reason: {by_reason}")
    print(f"tables: {output.rstrip('/')}/domain_lookups/ and {output.rstrip('/')}/company_emails/")


if __name__ == "__main__":
    raise SystemExit(main())
