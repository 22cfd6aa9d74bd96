"""The ledger of batches: what was claimed, submitted and read, kept beside the outputs.

Every paid step is written here before and after it happens, so a run that is killed,
retried by Dagster, or started twice never buys the same lookup again:

    claimed ──POST about to go──▶ intended ──POST accepted──▶ submitted ──▶ ready ──▶ read
                                      │
                                      └──outcome unknown (timeout, 5xx, dropped,
                                         claimer died)──▶ submit_unknown

`claimed` reserves lookups for one process without sending anything: if that process
dies, a later plan frees them. `intended` is written just before the POST: if the process
dies then, nobody can tell whether the server accepted the batch.

A batch's key is a hash of the lookup IDs it carries, so the same lookups map to the same
entry. A batch the server provably refused (validation, credit limit, never connected) is
released: its row is deleted and its lookups become unsent again.

Planning a run happens in one write transaction (SQLite `BEGIN IMMEDIATE`, or a table lock
on PostgreSQL), so two runs over overlapping lookups serialize there, even on different
machines sharing one database: the second sees the first's claims and waits for them
instead of submitting the same lookups.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

BATCH_SIZE = 100
FINAL_TASK_OUTCOMES = frozenset({"found", "not_found", "errored", "cancelled"})
REUSABLE_OUTCOMES = FINAL_TASK_OUTCOMES  # errored and cancelled too, unless retry_errored
RETRYABLE_OUTCOMES = frozenset({"errored", "cancelled"})

_metadata = sa.MetaData()
batches_table = sa.Table(
    "batches",
    _metadata,
    sa.Column("batch_key", sa.String, primary_key=True),
    sa.Column("state", sa.String, nullable=False),
    sa.Column("batch_id", sa.String),
    sa.Column("run_id", sa.String),
    sa.Column("claimer", sa.String),
    sa.Column("claimed_at", sa.Float),
    sa.Column("submitted_at", sa.Float),
    sa.Column("updated_at", sa.Float),
    sa.Column("message", sa.String),
)
lookups_table = sa.Table(
    "lookups",
    _metadata,
    sa.Column("lookup_id", sa.String, primary_key=True),
    sa.Column("batch_key", sa.String, index=True),
    sa.Column("status", sa.String),
    sa.Column("batch_id", sa.String),
    sa.Column("task_id", sa.String),
    sa.Column("lookup_time", sa.Float),
    sa.Column("mailboxes", sa.String),
    sa.Column("message", sa.String),
)


def this_process() -> str:
    """How the ledger names the process that claims a batch: host and PID."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _claimer_is_dead(claimer: str | None) -> bool:
    """True when the claimer ran on this host and its process is gone."""
    if not claimer or ":" not in claimer:
        return False
    host, _, pid = claimer.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def batch_key_for(lookup_ids: Sequence[str]) -> str:
    """The content identity of a batch: a hash of its sorted lookup IDs."""
    digest = hashlib.sha256("\n".join(sorted(lookup_ids)).encode()).hexdigest()
    return f"b{digest[:31]}"


@dataclass
class LedgerBatch:
    """One batch as the ledger knows it."""

    batch_key: str
    state: str
    lookup_ids: list[str]
    batch_id: str | None = None
    claimed_at: float | None = None
    submitted_at: float | None = None
    message: str | None = None
    claimer: str | None = None


@dataclass(frozen=True)
class LookupRecord:
    """The last known result of one lookup."""

    lookup_id: str
    status: str | None
    batch_key: str | None
    batch_id: str | None
    task_id: str | None
    lookup_time: float | None
    mailboxes: tuple[tuple[str, str | None], ...]
    message: str | None


@dataclass
class Plan:
    """What a run does with each of its lookups, decided in one ledger transaction.

    Attributes:
        carried: fresh results from earlier runs, reused without a request.
        adopt: batches already submitted (by any run) that still need polling or reading.
        wait: batches another live process has claimed and is submitting right now.
        unknown: lookups whose batch may or may not have been accepted; never resent
            unless the run allows paying twice.
        new: batches this run has claimed and must submit.
        over_budget: lookups left unsent because of the run's cap or the credit balance.
    """

    carried: dict[str, LookupRecord] = field(default_factory=dict)
    adopt: list[LedgerBatch] = field(default_factory=list)
    wait: list[LedgerBatch] = field(default_factory=list)
    unknown: dict[str, LedgerBatch] = field(default_factory=dict)
    new: list[LedgerBatch] = field(default_factory=list)
    over_budget: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TaskOutcome:
    """A lookup's result as read from one task, ready to be recorded."""

    lookup_id: str
    status: str
    task_id: str | None
    mailboxes: tuple[tuple[str, str | None], ...] = ()
    message: str | None = None


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Ledger:
    """Durable record of batches and lookup results: SQLite beside the outputs, or a database.

    Args:
        location: an SQLite file path (its folder is created when missing), or an
            SQLAlchemy database URL such as `postgresql://user@host/db` for runs on
            several machines.
        claim_lease_seconds: how long a claim by a process on another host (or one whose
            liveness cannot be checked) is trusted before its outcome counts as unknown.
    """

    def __init__(
        self, location: str | os.PathLike[str], claim_lease_seconds: float = 600.0
    ) -> None:
        self.claim_lease_seconds = claim_lease_seconds
        self.path: Path | None = None  # the SQLite file, when the ledger is one
        if "://" in str(location):
            url = sa.engine.make_url(str(location))
            if url.drivername == "postgresql":
                url = url.set(drivername="postgresql+psycopg")
            self._engine = sa.create_engine(url, pool_pre_ping=True)
            self._shown = url.render_as_string(hide_password=True)
        else:
            path = self.path = Path(location)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._engine = sa.create_engine(
                f"sqlite:///{path}", connect_args={"timeout": 60}, poolclass=sa.pool.NullPool
            )
            sa.event.listen(self._engine, "connect", _sqlite_connect)
            sa.event.listen(self._engine, "begin", _sqlite_begin_immediate)
            self._shown = str(path)
        _metadata.create_all(self._engine)

    def __repr__(self) -> str:
        return f"Ledger({self._shown!r})"

    def dispose(self) -> None:
        """Close the ledger's connections."""
        self._engine.dispose()

    def plan(
        self,
        run_id: str,
        lookup_ids: Iterable[str],
        *,
        refresh_after_seconds: float,
        force_refresh: bool = False,
        resubmit_unknown: bool = False,
        retry_errored: bool = False,
        max_new: int | None = None,
        now: float | None = None,
    ) -> Plan:
        """Sort a run's lookups into carried, adopted, awaited, unknown and new batches.

        New batches are claimed (state `claimed`) in the same transaction, so no other
        process can plan the same lookups until this one has submitted or released them.
        """
        now = time.time() if now is None else now
        wanted = sorted(set(lookup_ids))
        plan = Plan()
        with self._engine.begin() as conn:
            self._serialize_planners(conn)
            records = self._load_lookups(conn, wanted)
            batches = self._load_batches(
                conn, {r.batch_key for r in records.values() if r.batch_key}
            )
            adopt: dict[str, LedgerBatch] = {}
            wait: dict[str, LedgerBatch] = {}
            to_send: list[str] = []

            for lookup_id in wanted:
                record = records.get(lookup_id)
                batch = batches.get(record.batch_key) if record and record.batch_key else None
                reuse = not force_refresh and not (
                    retry_errored and record is not None and record.status in RETRYABLE_OUTCOMES
                )
                if record and self._is_fresh(record, now, refresh_after_seconds, not reuse):
                    plan.carried[lookup_id] = record
                elif (
                    batch and batch.batch_id and record.status in ("sent", "read_failed", "pending")
                ):
                    adopt[batch.batch_key] = batch
                elif (
                    batch
                    and batch.state in ("claimed", "intended")
                    and self.claim_alive(batch, now)
                ):
                    wait[batch.batch_key] = batch
                elif batch and batch.state == "claimed":
                    # Its claimer died before sending anything: the lookups are free again.
                    conn.execute(
                        sa.delete(batches_table).where(batches_table.c.batch_key == batch.batch_key)
                    )
                    to_send.append(lookup_id)
                elif (
                    batch and batch.state in ("intended", "submit_unknown") and not resubmit_unknown
                ):
                    if batch.state == "intended":
                        self._set_batch(
                            conn,
                            batch.batch_key,
                            state="submit_unknown",
                            message=(
                                "the process that submitted it stopped before recording an answer"
                            ),
                            now=now,
                        )
                        batch.state = "submit_unknown"
                    plan.unknown[lookup_id] = batch
                else:
                    to_send.append(lookup_id)

            if max_new is not None and len(to_send) > max_new:
                plan.over_budget = to_send[max_new:]
                to_send = to_send[:max_new]
            for chunk in _chunks(to_send, BATCH_SIZE):
                plan.new.append(self._claim(conn, run_id, list(chunk), now))
            plan.adopt = list(adopt.values())
            plan.wait = list(wait.values())
        return plan

    def _is_fresh(
        self, record: LookupRecord, now: float, refresh_after_seconds: float, force: bool
    ) -> bool:
        if force or record.status not in REUSABLE_OUTCOMES or record.lookup_time is None:
            return False
        return now - record.lookup_time < refresh_after_seconds

    def _serialize_planners(self, conn: sa.Connection) -> None:
        """Make concurrent plans take turns (SQLite does it with BEGIN IMMEDIATE)."""
        if conn.dialect.name == "postgresql":
            # This mode conflicts with itself and with row updates: one planner at a time.
            conn.execute(sa.text("LOCK TABLE batches IN SHARE ROW EXCLUSIVE MODE"))

    def claim_alive(self, batch: LedgerBatch, now: float | None = None) -> bool:
        """True while the batch's claimer may still be working on it."""
        now = time.time() if now is None else now
        if _claimer_is_dead(batch.claimer):
            return False
        return now - (batch.claimed_at or 0.0) < self.claim_lease_seconds

    def _claim(
        self, conn: sa.Connection, run_id: str, lookup_ids: list[str], now: float
    ) -> LedgerBatch:
        key = batch_key_for(lookup_ids)
        conn.execute(sa.delete(batches_table).where(batches_table.c.batch_key == key))
        conn.execute(
            sa.insert(batches_table).values(
                batch_key=key,
                state="claimed",
                run_id=run_id,
                claimer=this_process(),
                claimed_at=now,
                updated_at=now,
            )
        )
        for chunk in _chunks(lookup_ids, 500):
            conn.execute(sa.delete(lookups_table).where(lookups_table.c.lookup_id.in_(chunk)))
        conn.execute(
            sa.insert(lookups_table),
            [{"lookup_id": lid, "batch_key": key, "status": "sent"} for lid in lookup_ids],
        )
        return LedgerBatch(key, "claimed", lookup_ids, claimed_at=now, claimer=this_process())

    def mark_intended(self, batch_key: str) -> None:
        """Record that the POST is about to be sent: from now on its outcome may be unknown."""
        with self._engine.begin() as conn:
            self._set_batch(conn, batch_key, state="intended", now=time.time())

    def mark_submitted(self, batch_key: str, batch_id: str) -> None:
        """Record the batch ID the server gave: from now on the batch is only ever adopted."""
        now = time.time()
        with self._engine.begin() as conn:
            self._set_batch(
                conn, batch_key, state="submitted", batch_id=batch_id, submitted_at=now, now=now
            )
            conn.execute(
                sa.update(lookups_table)
                .where(lookups_table.c.batch_key == batch_key)
                .values(batch_id=batch_id)
            )

    def mark_ready(self, batch_key: str) -> None:
        """Record that every task of the batch has finished."""
        with self._engine.begin() as conn:
            self._set_batch(conn, batch_key, state="ready", now=time.time())

    def mark_unknown(self, batch_key: str, message: str) -> None:
        """Record that a submission may have been accepted: it is never resent automatically."""
        with self._engine.begin() as conn:
            self._set_batch(
                conn, batch_key, state="submit_unknown", message=message, now=time.time()
            )

    def release(self, batch_key: str) -> None:
        """Forget a batch the server provably did not accept; its lookups become unsent."""
        with self._engine.begin() as conn:
            conn.execute(sa.delete(batches_table).where(batches_table.c.batch_key == batch_key))
            conn.execute(sa.delete(lookups_table).where(lookups_table.c.batch_key == batch_key))

    def record_results(
        self, batch_key: str, outcomes: Sequence[TaskOutcome], *, read: bool
    ) -> None:
        """Store the results read from a batch's tasks; `read` marks the batch finished."""
        now = time.time()
        with self._engine.begin() as conn:
            for outcome in outcomes:
                conn.execute(
                    sa.update(lookups_table)
                    .where(lookups_table.c.lookup_id == outcome.lookup_id)
                    .where(lookups_table.c.batch_key == batch_key)
                    .values(
                        status=outcome.status,
                        task_id=outcome.task_id,
                        lookup_time=now,
                        mailboxes=json.dumps(outcome.mailboxes),
                        message=outcome.message,
                    )
                )
            if read:
                self._set_batch(conn, batch_key, state="read", now=now)

    def batch(self, batch_key: str) -> LedgerBatch | None:
        """The batch as now recorded, or None when it was released."""
        with self._engine.connect() as conn:
            return self._load_batches(conn, {batch_key}).get(batch_key)

    def records(self, lookup_ids: Iterable[str]) -> dict[str, LookupRecord]:
        """The last known result of each of these lookups."""
        with self._engine.connect() as conn:
            return self._load_lookups(conn, sorted(set(lookup_ids)))

    def _set_batch(self, conn: sa.Connection, batch_key: str, now: float, **values: object) -> None:
        conn.execute(
            sa.update(batches_table)
            .where(batches_table.c.batch_key == batch_key)
            .values(updated_at=now, **values)
        )

    def _load_lookups(
        self, conn: sa.Connection, lookup_ids: Sequence[str]
    ) -> dict[str, LookupRecord]:
        found: dict[str, LookupRecord] = {}
        for chunk in _chunks(lookup_ids, 500):
            rows = conn.execute(
                sa.select(lookups_table).where(lookups_table.c.lookup_id.in_(chunk))
            )
            for row in rows:
                found[row.lookup_id] = _lookup_record(row)
        return found

    def _load_batches(self, conn: sa.Connection, keys: set[str]) -> dict[str, LedgerBatch]:
        found: dict[str, LedgerBatch] = {}
        for chunk in _chunks(sorted(keys), 500):
            rows = conn.execute(
                sa.select(batches_table).where(batches_table.c.batch_key.in_(chunk))
            )
            for row in rows:
                found[row.batch_key] = LedgerBatch(
                    batch_key=row.batch_key,
                    state=row.state,
                    lookup_ids=[],
                    batch_id=row.batch_id,
                    claimed_at=row.claimed_at,
                    submitted_at=row.submitted_at,
                    message=row.message,
                    claimer=row.claimer,
                )
            members = conn.execute(
                sa.select(lookups_table.c.batch_key, lookups_table.c.lookup_id).where(
                    lookups_table.c.batch_key.in_(chunk)
                )
            )
            for batch_key, lookup_id in members:
                if batch_key in found:
                    found[batch_key].lookup_ids.append(lookup_id)
        return found


def _lookup_record(row: sa.Row) -> LookupRecord:
    mailboxes = tuple(tuple(pair) for pair in json.loads(row.mailboxes)) if row.mailboxes else ()
    return LookupRecord(
        lookup_id=row.lookup_id,
        status=row.status,
        batch_key=row.batch_key,
        batch_id=row.batch_id,
        task_id=row.task_id,
        lookup_time=row.lookup_time,
        mailboxes=mailboxes,
        message=row.message,
    )


def _sqlite_connect(dbapi_connection, _record) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE instead of pysqlite's own BEGIN.
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA synchronous=FULL")


def _sqlite_begin_immediate(conn) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")
