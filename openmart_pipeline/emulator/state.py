"""Live state of the emulator: batches, tasks, credits, read rate and the counters tests read."""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from openmart_pipeline.emulator.config import EmulatorConfig, FaultConfig
from openmart_pipeline.emulator.faults import FaultPlan
from openmart_pipeline.emulator.results import (
    CANCELLED,
    COMPLETED,
    ERRORED,
    PROCESSING,
    TaskOutcome,
    expected_outcome,
)
from openmart_pipeline.emulator.validation import TaskRequest

_WINDOW_SECONDS = 1.0


class NotEnoughCredits(Exception):
    """A submission asks for more tasks than the remaining credits pay for."""


@dataclass
class EmulatedTask:
    """A task the emulator accepted, with the moment it stops being ``PROCESSING``."""

    task_id: str
    batch_id: str
    request: TaskRequest
    outcome: TaskOutcome
    ready_at: float

    def status(self, now: float) -> str:
        """Return the task's status at monotonic time ``now``."""
        return self.outcome.status if now >= self.ready_at else PROCESSING

    def as_json(self, now: float) -> dict:
        """Return the task as the task route answers it."""
        status = self.status(now)
        data = []
        if status == COMPLETED:
            data = [{"email": email, "status": state} for email, state in self.outcome.mailboxes]
        return {
            "task_id": self.task_id,
            "status": status,
            "tracking_id": self.request.tracking_id,
            "data": data,
        }


@dataclass
class EmulatedBatch:
    """An accepted batch: its tasks in submission order."""

    batch_id: str
    task_ids: list[str]


class EmulatorState:
    """Everything the emulator remembers, safe to read from another thread.

    Route handlers run on the server's event loop; tests read ``stats()`` and change the config
    from their own thread, so every change goes through one lock.

    Attributes:
        config: The live configuration; accepted tasks are paid from ``config.credits``.
    """

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.monotonic):
        """Start with no batch and the counters at zero.

        Args:
            config: The configuration to follow and to spend credits from.
            clock: Monotonic clock in seconds, replaceable in tests.
        """
        self.config = config
        self.clock = clock
        self._lock = threading.Lock()
        self._plan = FaultPlan(config.faults)
        self._batches: dict[str, EmulatedBatch] = {}
        self._tasks: dict[str, EmulatedTask] = {}
        self._accepted: list[dict] = []
        self._submissions_received = 0
        self._submissions_accepted = 0
        self._submissions_in_flight = 0
        self._max_submissions_in_flight = 0
        self._reads = 0
        self._read_arrivals: deque[float] = deque()
        self._max_reads_in_any_second = 0
        self._admitted_reads: deque[float] = deque()
        self._rate_limited = 0
        self._faults_injected: Counter[str] = Counter()

    # Configuration changes

    def set_faults(self, faults: FaultConfig) -> None:
        """Replace the fault settings and restart the fault generators from their seed."""
        with self._lock:
            self.config.faults = faults
            self._plan = FaultPlan(faults)

    def set_credits(self, credits: int | None) -> None:
        """Set the remaining credits; None means unlimited."""
        if credits is not None and credits < 0:
            raise ValueError(f"credits must be >= 0 or None, got {credits}")
        with self._lock:
            self.config.credits = credits

    # Faults and accounting

    def draw_fault(self, endpoint: str) -> str | None:
        """Return the fault kind the next request to ``endpoint`` gets, or None."""
        with self._lock:
            if self._plan.faults is not self.config.faults:
                # The config's faults were replaced directly: follow them from their seed.
                self._plan = FaultPlan(self.config.faults)
            return self._plan.draw(endpoint)

    def note_fault(self, kind: str) -> None:
        """Count a fault that was actually injected."""
        with self._lock:
            self._faults_injected[kind] += 1

    def submission_started(self) -> None:
        """Count a submission that arrived and is now held or handled."""
        with self._lock:
            self._submissions_received += 1
            self._submissions_in_flight += 1
            self._max_submissions_in_flight = max(
                self._max_submissions_in_flight, self._submissions_in_flight
            )

    def submission_finished(self) -> None:
        """Count a submission whose answer is done, whatever it was."""
        with self._lock:
            self._submissions_in_flight -= 1

    def admit_read(self) -> float | None:
        """Count a read request and apply the read rate limit.

        Returns:
            None if the read may proceed, else the seconds until the limit admits one again.
        """
        now = self.clock()
        with self._lock:
            self._reads += 1
            _drop_older_than(self._read_arrivals, now - _WINDOW_SECONDS)
            self._read_arrivals.append(now)
            self._max_reads_in_any_second = max(
                self._max_reads_in_any_second, len(self._read_arrivals)
            )

            limit = self.config.read_rate_limit
            if limit is None:
                return None
            _drop_older_than(self._admitted_reads, now - _WINDOW_SECONDS)
            if len(self._admitted_reads) >= limit:
                self._rate_limited += 1
                return max(0.0, self._admitted_reads[0] + _WINDOW_SECONDS - now)
            self._admitted_reads.append(now)
            return None

    # Batches and tasks

    def accept(self, requests: list[TaskRequest]) -> EmulatedBatch:
        """Create and charge a batch of valid tasks.

        Raises:
            NotEnoughCredits: If the remaining credits do not pay for every task; then nothing
                is created or charged.
        """
        now = self.clock()
        with self._lock:
            credits = self.config.credits
            if credits is not None and len(requests) > credits:
                raise NotEnoughCredits
            if credits is not None:
                self.config.credits = credits - len(requests)

            batch = EmulatedBatch(str(uuid.uuid4()), [])
            for request in requests:
                outcome = expected_outcome(request.domain, self.config.max_task_seconds)
                task = EmulatedTask(
                    task_id=str(uuid.uuid4()),
                    batch_id=batch.batch_id,
                    request=request,
                    outcome=outcome,
                    ready_at=now + outcome.task_seconds * self.config.time_scale,
                )
                self._tasks[task.task_id] = task
                batch.task_ids.append(task.task_id)
                self._accepted.append(
                    {
                        "batch_id": batch.batch_id,
                        "task_id": task.task_id,
                        "domain": request.domain,
                        "company_name": request.company_name,
                        "tracking_id": request.tracking_id,
                    }
                )
            self._batches[batch.batch_id] = batch
            self._submissions_accepted += 1
            return batch

    def batch_counts(self, batch_id: str) -> dict | None:
        """Return a batch's flat status counts, or None if there is no such batch.

        ``CANCELLED`` tasks are counted under ``errored``: the API's counts have no cancelled
        field, and this keeps ``processing + completed + errored == total``.
        """
        now = self.clock()
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return None
            statuses = Counter(self._tasks[task_id].status(now) for task_id in batch.task_ids)
        processing = statuses[PROCESSING]
        return {
            "processing": processing,
            "completed": statuses[COMPLETED],
            "errored": statuses[ERRORED] + statuses[CANCELLED],
            "total": len(batch.task_ids),
            "batch_ready": processing == 0,
        }

    def batch_task_ids(self, batch_id: str, status: str | None = None) -> list[str] | None:
        """Return a batch's task ids in submission order, optionally only those in ``status``.

        Returns:
            The ids, or None if there is no such batch.
        """
        now = self.clock()
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return None
            return [
                task_id
                for task_id in batch.task_ids
                if status is None or self._tasks[task_id].status(now) == status
            ]

    def task_json(self, task_id: str) -> dict | None:
        """Return a task as the task route answers it, or None if there is no such task."""
        now = self.clock()
        with self._lock:
            task = self._tasks.get(task_id)
            return None if task is None else task.as_json(now)

    def balance(self) -> int | None:
        """Return the remaining credits, or None when they are unlimited."""
        with self._lock:
            return self.config.credits

    def stats(self) -> dict:
        """Return a snapshot of the counters, safe to serialise as JSON."""
        with self._lock:
            return {
                "submissions_received": self._submissions_received,
                "submissions_accepted": self._submissions_accepted,
                "submissions_in_flight": self._submissions_in_flight,
                "max_submissions_in_flight": self._max_submissions_in_flight,
                "tasks_accepted": len(self._accepted),
                "accepted": [dict(entry) for entry in self._accepted],
                "reads": self._reads,
                "max_reads_in_any_second": self._max_reads_in_any_second,
                "reads_rate_limited": self._rate_limited,
                "faults_injected": dict(self._faults_injected),
                "credits": self.config.credits,
            }


def _drop_older_than(arrivals: deque[float], cutoff: float) -> None:
    while arrivals and arrivals[0] <= cutoff:
        arrivals.popleft()


def retry_after_header(seconds: float) -> str:
    """Render a rate-limit wait as a whole number of seconds, at least one."""
    return str(max(1, math.ceil(seconds)))
