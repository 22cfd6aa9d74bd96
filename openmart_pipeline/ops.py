"""The ops behind the lookup assets: plan the batches, submit and wait, build the tables.

`plan_batches` decides in the ledger what is carried over, adopted or sent, and splits the
batches into steps of up to `batches_per_step`; each `submit_and_wait` step works all of
its batches concurrently; `build_tables` joins every input row to its result.
"""

import asyncio
from dataclasses import dataclass

import pandas as pd
from dagster import (
    Backoff,
    Config,
    DynamicOut,
    DynamicOutput,
    Failure,
    In,
    OpExecutionContext,
    Out,
    Output,
    RetryPolicy,
    op,
)
from pydantic import Field

from openmart_pipeline.errors import (
    CreditLimitReached,
    PermanentApiError,
    UnknownStatusError,
)
from openmart_pipeline.lookups import (
    BatchRunReport,
    BatchWork,
    LookupPlan,
    RunSettings,
    plan_lookups,
    run_batches,
)
from openmart_pipeline.resources.ledger import LedgerResource
from openmart_pipeline.resources.openmart import OpenmartResource
from openmart_pipeline.tables_out import build_output_tables, lookups_of, output_metadata

OPENMART_POOL = "openmart_api"
UNFINISHED_STATUSES = ("submit_unknown", "pending", "read_failed", "not_sent", "over_budget")
NEXT_STEP = {
    "submit_unknown": "their submission may have been accepted and is never resent on its own; "
    "check with Openmart, then run with --resubmit-unknown (may pay twice) if it was not",
    "pending": "their batch was not ready in time; run again to read it without paying again",
    "read_failed": "their task could not be read; run again to read it without paying again",
    "not_sent": "their submission never reached the server; run again to send them",
    "over_budget": "they were not sent because of --max-lookups (max_lookups_per_run) or the "
    "credit balance; raise the cap or add credits, then run again to send only them",
}


def unfinished_message(counts: dict[str, int]) -> str:
    """A run's closing error when some rows have no final result yet."""
    parts = [f"{n} row(s) are {status}: {NEXT_STEP[status]}" for status, n in counts.items()]
    return "The tables are written, but not every row is finished. " + "; ".join(parts) + "."


class LookupRunConfig(Config):
    """What a run sends and what it reuses."""

    force_refresh: bool = Field(default=False, description="Send every lookup again.")
    refresh_after_days: float = Field(
        default=30.0, description="Reuse a found/not_found result younger than this."
    )
    resubmit_unknown: bool = Field(
        default=False,
        description="Send again lookups whose earlier submission has an unknown outcome. "
        "May pay twice.",
    )
    retry_errored: bool = Field(
        default=False,
        description="Send again lookups whose last result was errored or cancelled.",
    )
    max_lookups_per_run: int | None = Field(
        default=None, description="Most lookups this run may send; the rest are over_budget."
    )
    batches_per_step: int = Field(
        default=100, description="Batches one submit-and-wait step works at once."
    )


@dataclass(frozen=True)
class StepWork:
    """The batches one submit-and-wait step works, with the run's settings."""

    settings: RunSettings
    batches: list[BatchWork]


@op(
    ins={"domain_table": In(pd.DataFrame)},
    out={"plan": Out(LookupPlan), "batches": DynamicOut(StepWork)},
)
def plan_batches(
    context: OpExecutionContext,
    config: LookupRunConfig,
    openmart: OpenmartResource,
    ledger: LedgerResource,
    domain_table: pd.DataFrame,
):
    """Read the credit balance, then claim in the ledger what this run will send."""
    lookups = lookups_of(domain_table)
    settings = run_settings(config, openmart)
    try:
        balance = asyncio.run(_credit_balance(openmart))
    except (PermanentApiError, ValueError) as error:
        raise Failure(str(error), allow_retries=False) from None
    plan = plan_lookups(ledger.open(), list(lookups.values()), settings, context.run_id, balance)

    sending = plan.to_send
    context.log.info(
        f"{len(domain_table)} rows, {len(lookups)} distinct lookups: "
        f"{sum(r.carried_over for r in plan.results.values())} carried over, "
        f"{sending} to send in {sum(w.kind == 'new' for w in plan.work)} batches "
        f"(about {sending} credits of a balance of {balance}), "
        f"{sum(w.kind != 'new' for w in plan.work)} batches to adopt, "
        f"{sum(r.status == 'over_budget' for r in plan.results.values())} over budget"
    )
    yield Output(plan, "plan")

    step = max(1, config.batches_per_step)
    for index in range(0, len(plan.work), step):
        chunk = StepWork(settings, plan.work[index : index + step])
        yield DynamicOutput(chunk, output_name="batches", mapping_key=f"step_{index // step}")


async def _credit_balance(openmart: OpenmartResource) -> int:
    async with openmart.client() as client:
        return await client.credit_balance()


def run_settings(config: LookupRunConfig, openmart: OpenmartResource) -> RunSettings:
    return RunSettings(
        refresh_after_days=config.refresh_after_days,
        force_refresh=config.force_refresh,
        resubmit_unknown=config.resubmit_unknown,
        retry_errored=config.retry_errored,
        max_lookups_per_run=config.max_lookups_per_run,
        max_submissions_in_flight=openmart.max_submissions_in_flight,
        poll_interval_seconds=openmart.poll_interval_seconds,
        poll_deadline_seconds=openmart.poll_deadline_seconds,
    )


@op(
    out=Out(BatchRunReport),
    pool=OPENMART_POOL,
    retry_policy=RetryPolicy(max_retries=2, delay=30, backoff=Backoff.EXPONENTIAL),
)
def submit_and_wait(
    context: OpExecutionContext,
    openmart: OpenmartResource,
    ledger: LedgerResource,
    batches: StepWork,
) -> BatchRunReport:
    """Submit (or adopt) each batch, poll until ready, and read every task, all at once.

    A Dagster retry of this step is safe: the ledger knows what was already submitted.
    """
    try:
        return asyncio.run(_work(context, openmart, ledger, batches.batches, batches.settings))
    except (PermanentApiError, UnknownStatusError) as error:
        # Retrying cannot help: fail the step without Dagster's retry policy.
        raise Failure(str(error), allow_retries=False) from None


async def _work(context, openmart, ledger, batches, settings) -> BatchRunReport:
    async with openmart.client() as client:
        return await run_batches(
            client,
            ledger.open(),
            batches,
            settings,
            log=context.log.info,
            warn=context.log.warning,
        )


@op(
    ins={"domain_table": In(pd.DataFrame), "plan": In(LookupPlan), "reports": In(list)},
    out={
        "domain_lookups": Out(pd.DataFrame, io_manager_key="parquet_io_manager"),
        "company_emails": Out(pd.DataFrame, io_manager_key="parquet_io_manager"),
    },
)
def build_tables(
    context: OpExecutionContext,
    domain_table: pd.DataFrame,
    plan: LookupPlan,
    reports: list[BatchRunReport],
):
    """Join every input row to its lookup's result; fail after writing at a credit limit."""
    results = dict(plan.results)
    for report in reports:
        results.update(report.results)
    lookups, emails = build_output_tables(domain_table, results, context.run_id)
    metadata = output_metadata(lookups, emails, plan, reports)
    yield Output(lookups, "domain_lookups", metadata=metadata["domain_lookups"])
    yield Output(emails, "company_emails", metadata=metadata["company_emails"])

    # The tables are written; now say plainly what still needs the user or another run.
    statuses = lookups["status"].value_counts()
    if statuses.get("credit_limit", 0):
        raise Failure(str(CreditLimitReached(int(statuses["credit_limit"]))), allow_retries=False)
    unfinished = {s: int(statuses[s]) for s in UNFINISHED_STATUSES if statuses.get(s, 0)}
    if unfinished:
        raise Failure(unfinished_message(unfinished), allow_retries=False)
