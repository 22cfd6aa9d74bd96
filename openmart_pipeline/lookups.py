"""Looking up mailboxes in batches: claim, submit, poll, list, read, record.

This module knows the API's flow and the ledger, not Dagster or Parquet. `plan_lookups`
decides, in one ledger transaction, what a run carries over, adopts and sends;
`run_batches` then works every batch at once: submissions overlap up to a bound, and a
batch is polled and read as soon as its own submission returns, while others are still
held by the server.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from openmart_pipeline.errors import (
    AuthenticationError,
    BatchValidationError,
    CreditLimitError,
    OpenmartError,
    SubmitOutcomeUnknown,
    TransientApiError,
    UnknownStatusError,
)
from openmart_pipeline.ledger import (
    FINAL_TASK_OUTCOMES,
    Ledger,
    LedgerBatch,
    LookupRecord,
    TaskOutcome,
)
from openmart_pipeline.progress import Progress
from openmart_pipeline.resources.openmart import OpenmartClient
from openmart_pipeline.resources.responses import TaskResult

MAX_POLL_INTERVAL_SECONDS = 15.0


@dataclass(frozen=True)
class Lookup:
    """One distinct question to the API: a company at a domain.

    Input rows that normalize to the same lookup share one; the lookup ID is sent as the
    task's `tracking_id` and is how every task read is joined back to its rows.
    """

    lookup_id: str
    domain: str
    company_name: str
    city: str | None = None
    state: str | None = None
    country: str | None = None

    def task(self) -> dict[str, str]:
        """The task object as the API takes it."""
        task = {
            "domain": self.domain,
            "company_name": self.company_name,
            "tracking_id": self.lookup_id,
        }
        for name in ("city", "state", "country"):
            value = getattr(self, name)
            if value:
                task[name] = value
        return task


def lookup_id_for(
    domain: str, company_name: str, city: str | None, state: str | None, country: str | None
) -> str:
    """A stable ID for a lookup: the same normalized question always gets the same ID."""
    parts = [domain, " ".join(company_name.casefold().split())]
    parts += [" ".join((value or "").casefold().split()) for value in (city, state, country)]
    return "L" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:23]


@dataclass(frozen=True)
class LookupResult:
    """What became of one lookup in this run.

    `status` is one of: found, not_found, errored, cancelled, read_failed, pending,
    submit_unknown, credit_limit, over_budget, not_sent.
    """

    status: str
    batch_id: str | None = None
    task_id: str | None = None
    lookup_time: datetime | None = None
    mailboxes: tuple[tuple[str, str | None], ...] = ()
    message: str | None = None
    carried_over: bool = False


@dataclass
class RunSettings:
    """How a run treats earlier results, unknown outcomes and its budget."""

    refresh_after_days: float = 30.0
    force_refresh: bool = False
    resubmit_unknown: bool = False
    retry_errored: bool = False
    max_lookups_per_run: int | None = None
    max_submissions_in_flight: int = 8
    poll_interval_seconds: float = 2.0
    poll_deadline_seconds: float = 3600.0


@dataclass
class BatchWork:
    """One batch for the submit-and-wait step: to submit, to adopt, or to wait for."""

    kind: str  # "new", "adopt" or "wait"
    batch_key: str
    lookups: list[Lookup]
    batch_id: str | None = None


@dataclass
class LookupPlan:
    """A run's lookups split into results known now and batches still to work."""

    results: dict[str, LookupResult]
    work: list[BatchWork]
    to_send: int
    balance: int | None = None


@dataclass
class BatchRunReport:
    """What `run_batches` did: each lookup's result and counts for the run's metadata."""

    results: dict[str, LookupResult] = field(default_factory=dict)
    batches_submitted: int = 0
    batches_adopted: int = 0
    lookups_sent: int = 0


def _as_time(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=UTC)


def _carried(record: LookupRecord) -> LookupResult:
    return LookupResult(
        status=record.status or "pending",
        batch_id=record.batch_id,
        task_id=record.task_id,
        lookup_time=_as_time(record.lookup_time),
        mailboxes=record.mailboxes,
        message=record.message,
        carried_over=True,
    )


def plan_lookups(
    ledger: Ledger,
    lookups: Sequence[Lookup],
    settings: RunSettings,
    run_id: str,
    balance: int | None = None,
) -> LookupPlan:
    """Decide what this run does with each distinct lookup, claiming what it will send.

    Args:
        balance: the account's credits, when known; lookups beyond it (or beyond
            `max_lookups_per_run`) are left `over_budget` instead of being sent.
    """
    by_id = {lookup.lookup_id: lookup for lookup in lookups}
    caps = [cap for cap in (settings.max_lookups_per_run, balance) if cap is not None]
    plan = ledger.plan(
        run_id,
        by_id,
        refresh_after_seconds=settings.refresh_after_days * 86400.0,
        force_refresh=settings.force_refresh,
        resubmit_unknown=settings.resubmit_unknown,
        retry_errored=settings.retry_errored,
        max_new=min(caps) if caps else None,
    )

    results = {lid: _carried(record) for lid, record in plan.carried.items()}
    for lookup_id, batch in plan.unknown.items():
        results[lookup_id] = LookupResult(
            status="submit_unknown",
            batch_id=batch.batch_id,
            message=(
                f"an earlier submission of this lookup (ledger batch {batch.batch_key}) may have "
                "been accepted; it is not sent again unless you run with --resubmit-unknown "
                "(resubmit_unknown in the run config), which may pay twice"
            ),
        )
    for lookup_id in plan.over_budget:
        results[lookup_id] = LookupResult(
            status="over_budget",
            message=(
                f"not sent: this run could send {min(caps) if caps else 0} lookup(s) "
                f"(--max-lookups {settings.max_lookups_per_run}, credit balance {balance})"
            ),
        )

    def work(kind: str, batch: LedgerBatch) -> BatchWork:
        members = [by_id[lid] for lid in batch.lookup_ids if lid in by_id]
        return BatchWork(kind, batch.batch_key, members, batch.batch_id)

    batches = [work("new", b) for b in plan.new]
    batches += [work("adopt", b) for b in plan.adopt] + [work("wait", b) for b in plan.wait]
    to_send = sum(len(b.lookup_ids) for b in plan.new)
    return LookupPlan(results=results, work=batches, to_send=to_send, balance=balance)


class _BatchRunner:
    """Works a set of batches concurrently against one client and one ledger."""

    def __init__(
        self,
        client: OpenmartClient,
        ledger: Ledger,
        settings: RunSettings,
        progress: Progress,
        log: Callable[[str], None],
        warn: Callable[[str], None],
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.settings = settings
        self.progress = progress
        self.log = log
        self.warn = warn
        self.report = BatchRunReport()
        self.submit_slots = asyncio.Semaphore(settings.max_submissions_in_flight)
        self.credit_limit_hit = False

    async def run(self, batches: Sequence[BatchWork]) -> BatchRunReport:
        total = len(batches)
        ticker = asyncio.create_task(self._tick())
        try:
            async with asyncio.TaskGroup() as group:
                for number, batch in enumerate(batches, start=1):
                    group.create_task(self._work(batch, f"batch {number}/{total}"))
        except BaseExceptionGroup as failures:
            # The task group cancelled the other batches; their ledger entries stay, so
            # the next run adopts what was submitted.
            raise _most_telling(failures) from None
        finally:
            ticker.cancel()
        return self.report

    async def _tick(self) -> None:
        # Keeps the log moving while every batch is held by the server.
        while True:
            await asyncio.sleep(self.progress.interval)
            self.progress.tick()

    async def _work(self, batch: BatchWork, label: str) -> None:
        try:
            if batch.kind == "new":
                batch_id = await self._submit_once(batch, label)
            elif batch.kind == "wait":
                batch_id = await self._wait_for_claim(batch, label)
            else:
                batch_id = batch.batch_id
                self.report.batches_adopted += 1
                self.log(f"{label}: adopting batch_id {batch_id} submitted by an earlier run")
            if batch_id is not None:
                await self._collect(batch, batch_id, label)
        finally:
            self.progress.batch_read(len(batch.lookups))

    async def _submit_once(self, batch: BatchWork, label: str) -> str | None:
        """Submit a claimed batch, unless an earlier attempt of this step already did.

        A Dagster retry of the step hands over the same batches; the ledger tells which of
        them were sent, so none is paid for twice.
        """
        current = self.ledger.batch(batch.batch_key)
        if current is not None and current.state == "claimed":
            return await self._submit(batch, label)
        if current is not None and current.batch_id:
            self.report.batches_adopted += 1
            self.log(f"{label}: already submitted as batch_id {current.batch_id}; adopting it")
            return current.batch_id
        if current is not None:
            message = current.message or (
                "an earlier attempt of this step may have submitted it; it is not sent again"
            )
            self._set(batch, "submit_unknown", message)
            return None
        self._set(
            batch,
            "not_sent",
            "an earlier attempt of this step released it unsent; run again to send it",
        )
        return None

    def _take_recorded(self, batch: BatchWork, lookups: Sequence[Lookup]) -> list[LookupRecord]:
        """Use the final results the ledger already holds for these lookups of this batch."""
        records = self.ledger.records(lookup.lookup_id for lookup in lookups)
        taken = [
            record
            for record in records.values()
            if record.batch_key == batch.batch_key
            and record.status in FINAL_TASK_OUTCOMES
            and record.task_id
        ]
        for record in taken:
            self.report.results[record.lookup_id] = _carried(record)
        return taken

    def _set(
        self, batch: BatchWork, status: str, message: str, batch_id: str | None = None
    ) -> None:
        for lookup in batch.lookups:
            self.report.results[lookup.lookup_id] = LookupResult(
                status=status, batch_id=batch_id, message=message
            )

    async def _submit(self, batch: BatchWork, label: str) -> str | None:
        async with self.submit_slots:
            if self.credit_limit_hit:
                self.ledger.release(batch.batch_key)
                self._set(batch, "credit_limit", "not sent: the account's credit limit was reached")
                return None
            tasks = [lookup.task() for lookup in batch.lookups]
            self.ledger.mark_intended(batch.batch_key)
            try:
                submitted = await self.client.submit_batch(tasks, label=label)
            except CreditLimitError as error:
                self.credit_limit_hit = True
                self.ledger.release(batch.batch_key)
                self.warn(f"{label}: {error}; no further batches are submitted")
                self._set(batch, "credit_limit", "not sent: the account's credit limit was reached")
                return None
            except SubmitOutcomeUnknown as error:
                self.ledger.mark_unknown(batch.batch_key, str(error))
                self.warn(f"{label}: outcome unknown, not resubmitted: {error}")
                self._set(batch, "submit_unknown", str(error))
                return None
            except (BatchValidationError, TransientApiError) as error:
                # Provably not accepted: the lookups may be sent by a later run.
                self.ledger.release(batch.batch_key)
                self.warn(f"{label}: not accepted: {error}")
                self._set(batch, "not_sent", str(error))
                return None
            except BaseException:
                # Cancelled or failed mid-request: the server may have the batch.
                self.ledger.mark_unknown(batch.batch_key, "the run stopped during the submission")
                raise

        self.ledger.mark_submitted(batch.batch_key, submitted.batch_id)
        self.report.batches_submitted += 1
        self.report.lookups_sent += len(batch.lookups)
        self.progress.batch_submitted()
        self.log(f"submitted {label} ({len(tasks)} tasks, batch_id {submitted.batch_id})")
        return submitted.batch_id

    async def _wait_for_claim(self, batch: BatchWork, label: str) -> str | None:
        """Wait while another live process submits and reads a batch this run also needs."""
        self.log(f"{label}: another run is sending these lookups; waiting for its results")
        deadline = time.monotonic() + self.settings.poll_deadline_seconds
        while True:
            await asyncio.sleep(self.settings.poll_interval_seconds)
            if time.monotonic() > deadline:
                self._set(
                    batch,
                    "pending",
                    "another run was still working on this lookup at "
                    "the poll deadline; run again to collect its result",
                )
                return None
            current = self.ledger.batch(batch.batch_key)
            if current is None:
                self._set(
                    batch,
                    "pending",
                    "the run that claimed this lookup did not send it; run again to send it",
                )
                return None
            if current.state == "read":
                # The other run read every task: take its results instead of reading again.
                self._take_recorded(batch, batch.lookups)
                return None
            if current.batch_id and not self.ledger.claim_alive(current):
                # Submitted, then its run stopped: read the batch ourselves.
                self.report.batches_adopted += 1
                return current.batch_id
            if current.batch_id:
                continue
            if current.state == "claimed" and not self.ledger.claim_alive(current):
                self._set(
                    batch,
                    "pending",
                    "the run that claimed this lookup stopped before "
                    "sending it; run again to send it",
                )
                return None
            if current.state == "submit_unknown" or not self.ledger.claim_alive(current):
                self._set(
                    batch,
                    "submit_unknown",
                    "the run that claimed this lookup could not "
                    "tell whether its submission was accepted",
                )
                return None

    async def _collect(self, batch: BatchWork, batch_id: str, label: str) -> None:
        """Poll the batch until ready (or the deadline), then read every task."""
        deadline = time.monotonic() + self.settings.poll_deadline_seconds
        interval = self.settings.poll_interval_seconds
        while True:
            try:
                status = await self.client.batch_status(batch_id)
            except OpenmartError as error:
                if isinstance(error, AuthenticationError | UnknownStatusError):
                    raise
                self.warn(f"{label}: status of batch_id {batch_id} could not be read: {error}")
                self._set(batch, "pending", f"status could not be read: {error}", batch_id)
                return
            if status.batch_ready:
                break
            if time.monotonic() + interval > deadline:
                self.warn(
                    f"{label}: batch_id {batch_id} not ready by the poll deadline; its "
                    "lookups stay pending and a later run collects them"
                )
                self._set(
                    batch,
                    "pending",
                    "the batch was not ready by the poll deadline; a "
                    "later run reads it without paying again",
                    batch_id,
                )
                return
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, MAX_POLL_INTERVAL_SECONDS)

        self.ledger.mark_ready(batch.batch_key)
        self.progress.batch_ready()
        self.log(
            f"{label} ready: {status.completed} completed, {status.errored} errored "
            f"(batch_id {batch_id})"
        )
        await self._read_tasks(batch, batch_id, label)

    async def _read_tasks(self, batch: BatchWork, batch_id: str, label: str) -> None:
        try:
            task_ids = await self.client.list_task_ids(batch_id)
        except (AuthenticationError, UnknownStatusError):
            raise
        except OpenmartError as error:
            self.warn(f"{label}: task IDs of batch_id {batch_id} could not be read: {error}")
            self._set(batch, "read_failed", f"task IDs could not be read: {error}", batch_id)
            self.ledger.record_results(
                batch.batch_key,
                [
                    TaskOutcome(lookup.lookup_id, "read_failed", None, message=str(error))
                    for lookup in batch.lookups
                ],
                read=False,
            )
            return

        # Tasks an earlier run already read (before a read failure elsewhere in the batch)
        # are taken from the ledger, not read again.
        earlier = self._take_recorded(batch, batch.lookups)
        known = {record.task_id for record in earlier}
        task_ids = [task_id for task_id in task_ids if task_id not in known]
        reads = await asyncio.gather(*(self._read_task(t) for t in task_ids))
        outcomes: dict[str, TaskOutcome] = {}
        for task_id, task in zip(task_ids, reads, strict=True):
            if isinstance(task, OpenmartError):
                continue
            if task.tracking_id is None:
                self.warn(f"{label}: task {task_id} came back without a tracking ID; ignored")
                continue
            outcomes[task.tracking_id] = _outcome(task)

        failed = {
            t: r for t, r in zip(task_ids, reads, strict=True) if isinstance(r, OpenmartError)
        }
        now = datetime.now(tz=UTC)
        recorded = []
        taken = {record.lookup_id for record in earlier}
        for lookup in batch.lookups:
            if lookup.lookup_id in taken:
                continue
            outcome = outcomes.get(lookup.lookup_id)
            if outcome is None:
                message = (
                    f"{len(failed)} task read(s) of this batch failed after retries: "
                    + "; ".join(f"task {t}: {e}" for t, e in list(failed.items())[:2])
                    if failed
                    else "the batch listed no task with this lookup's tracking ID"
                )
                outcome = TaskOutcome(lookup.lookup_id, "read_failed", None, message=message)
            recorded.append(outcome)
            self.report.results[lookup.lookup_id] = LookupResult(
                status=outcome.status,
                batch_id=batch_id,
                task_id=outcome.task_id,
                lookup_time=now,
                mailboxes=outcome.mailboxes,
                message=outcome.message,
            )
        # Tasks of lookups from other tables that share this batch are recorded too.
        extra = [o for lid, o in outcomes.items() if lid not in {x.lookup_id for x in recorded}]
        self.ledger.record_results(batch.batch_key, recorded + extra, read=not failed)

    async def _read_task(self, task_id: str) -> TaskResult | OpenmartError:
        try:
            task = await self.client.read_task(task_id)
        except (AuthenticationError, UnknownStatusError):
            raise
        except OpenmartError as error:
            return error
        if task.status == "PROCESSING":
            return TransientApiError(f"task {task_id} is still PROCESSING in a ready batch")
        return task


def _most_telling(failures: BaseExceptionGroup) -> BaseException:
    """The failure to report from a group: an account or status problem before the rest."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [failures]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        else:
            leaves.append(current)
    for kind in (AuthenticationError, UnknownStatusError):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return leaves[0]


def _outcome(task: TaskResult) -> TaskOutcome:
    mailboxes = tuple((m.email, m.status) for m in task.mailboxes)
    if task.status == "COMPLETED":
        return TaskOutcome(
            task.tracking_id or "", "found" if mailboxes else "not_found", task.task_id, mailboxes
        )
    return TaskOutcome(task.tracking_id or "", task.status.lower(), task.task_id, mailboxes)


async def run_batches(
    client: OpenmartClient,
    ledger: Ledger,
    batches: Sequence[BatchWork],
    settings: RunSettings,
    log: Callable[[str], None],
    warn: Callable[[str], None] | None = None,
    progress_interval: float = 15.0,
) -> BatchRunReport:
    """Submit, adopt or wait for each batch, all at once, and read back every task.

    Raises:
        AuthenticationError: at the first 401/403; batches already submitted stay in the
            ledger and the next run adopts them.
        UnknownStatusError: a task or batch status this client does not know.
    """
    progress = Progress(
        batches_total=len(batches),
        lookups_total=sum(len(b.lookups) for b in batches),
        log=log,
        interval=progress_interval,
    )
    runner = _BatchRunner(client, ledger, settings, progress, log, warn or log)
    report = await runner.run(batches)
    progress.finish()
    return report
