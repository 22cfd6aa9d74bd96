"""Parsing of the API's answers, tolerant where the documentation is silent or inconsistent.

Every parser takes decoded JSON and either returns a typed value or raises
`UnexpectedResponseError` naming the endpoint and quoting a short excerpt of the answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from openmart_pipeline.errors import UnexpectedResponseError, UnknownStatusError

TASK_STATUSES = frozenset({"PROCESSING", "COMPLETED", "ERRORED", "CANCELLED"})
EXCERPT_CHARS = 200


@dataclass(frozen=True)
class BatchStatus:
    """Counts of a batch's tasks, and whether every task has finished."""

    processing: int
    completed: int
    errored: int
    total: int
    batch_ready: bool


@dataclass(frozen=True)
class SubmittedBatch:
    """What a successful submission answers."""

    batch_id: str
    status: BatchStatus | None


@dataclass(frozen=True)
class Mailbox:
    """One shared mailbox a task found, with the API's own status for it."""

    email: str
    status: str | None


@dataclass(frozen=True)
class TaskResult:
    """One task as read back: its status, the tracking ID it was sent with, its mailboxes."""

    task_id: str
    status: str
    tracking_id: str | None
    mailboxes: tuple[Mailbox, ...]


def excerpt(text: str, secret: str | None = None) -> str:
    """Shorten an answer for an error message, with the API key blanked out if it appears."""
    if secret:
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."


def _unexpected(endpoint: str, body: Any, why: str) -> UnexpectedResponseError:
    shown = body if isinstance(body, str) else json.dumps(body, default=str)
    return UnexpectedResponseError(f"{endpoint}: {why}; the answer was: {excerpt(shown)}")


def _count(endpoint: str, body: dict[str, Any], name: str) -> int:
    value = body.get(name, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _unexpected(endpoint, body, f"'{name}' is not a number")
    return int(value)


def parse_batch_status(endpoint: str, body: Any) -> BatchStatus:
    """Read batch counts, flat (the status route) or nested under 'status' (submission)."""
    if isinstance(body, dict) and isinstance(body.get("status"), dict):
        body = body["status"]
    if not isinstance(body, dict):
        raise _unexpected(endpoint, body, "expected an object of task counts")
    if isinstance(body.get("status"), str):
        # Some of Openmart's routes report a batch-level word; none is documented here.
        raise UnknownStatusError(
            f"{endpoint}: batch status '{body['status']}' is not one this client knows"
        )

    processing = _count(endpoint, body, "processing")
    completed = _count(endpoint, body, "completed")
    errored = _count(endpoint, body, "errored")
    total = _count(endpoint, body, "total")
    ready = body.get("batch_ready")
    if ready is None:
        if "processing" not in body:
            raise _unexpected(endpoint, body, "neither 'batch_ready' nor 'processing' is present")
        ready = processing == 0 and total > 0
    if not isinstance(ready, bool):
        raise _unexpected(endpoint, body, "'batch_ready' is not true or false")
    return BatchStatus(processing, completed, errored, total, ready)


def parse_submission(endpoint: str, body: Any) -> SubmittedBatch:
    """Read a submission's answer: a batch ID and, when present, its first counts."""
    if not isinstance(body, dict) or not isinstance(body.get("batch_id"), str):
        raise _unexpected(endpoint, body, "no 'batch_id' in the answer")
    status = None
    if isinstance(body.get("status"), dict):
        status = parse_batch_status(endpoint, body["status"])
    return SubmittedBatch(batch_id=body["batch_id"], status=status)


def parse_task_ids(endpoint: str, body: Any) -> list[str]:
    """Read a batch's task IDs, a bare array or wrapped as {'task_ids': [...]}."""
    if isinstance(body, dict) and "task_ids" in body:
        body = body["task_ids"]
    if not isinstance(body, list) or not all(isinstance(item, str) for item in body):
        raise _unexpected(endpoint, body, "expected an array of task ID strings")
    return body


def parse_task(endpoint: str, body: Any) -> TaskResult:
    """Read one task; `data` may be missing, null or empty (nothing found)."""
    if not isinstance(body, dict) or not isinstance(body.get("task_id"), str):
        raise _unexpected(endpoint, body, "no 'task_id' in the answer")
    status = body.get("status")
    if not isinstance(status, str):
        raise _unexpected(endpoint, body, "no task 'status' in the answer")
    status = status.upper()
    if status not in TASK_STATUSES:
        raise UnknownStatusError(
            f"{endpoint}: task {body['task_id']} has status '{status}', which this client "
            f"does not know (known: {', '.join(sorted(TASK_STATUSES))})"
        )

    data = body.get("data") or []
    if not isinstance(data, list):
        raise _unexpected(endpoint, body, "'data' is not an array")
    mailboxes = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("email"), str):
            raise _unexpected(endpoint, body, "an item of 'data' has no 'email'")
        email_status = item.get("status")
        mailboxes.append(
            Mailbox(item["email"], None if email_status is None else str(email_status))
        )

    tracking_id = body.get("tracking_id")
    return TaskResult(
        task_id=body["task_id"],
        status=status,
        tracking_id=None if tracking_id is None else str(tracking_id),
        mailboxes=tuple(mailboxes),
    )
