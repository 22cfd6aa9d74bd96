"""Validation of a submission body, with the error texts the Openmart API answers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlsplit

MIN_BATCH_SIZE = 1
MAX_BATCH_SIZE = 100

BATCH_SIZE_ERROR = "the number of tasks in each batch should be between 1 and 100"
NOT_AN_ARRAY_ERROR = "request body must be a JSON array of task objects"
NOT_AN_OBJECT_ERROR = "each task must be a JSON object"
DOMAIN_REQUIRED_ERROR = "Domain is required"
COMPANY_NAME_REQUIRED_ERROR = "company_name is required"
NOTIFY_URL_ERROR = "notify_url must be a valid URL"

_OPTIONAL_TEXT_FIELDS = ("city", "state", "country", "tracking_id")


class InvalidSubmission(ValueError):
    """The body of a submission breaks the contract; ``detail`` is the API's error text."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class TaskRequest:
    """One task of a submission, as the emulator keeps it."""

    domain: str
    company_name: str
    tracking_id: str | None


def _required_text(task: dict, name: str, error: str) -> str:
    value = task.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidSubmission(error)
    return value


def _check_notify_url(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidSubmission(NOTIFY_URL_ERROR)
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError as exc:
        raise InvalidSubmission(NOTIFY_URL_ERROR) from exc
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidSubmission(NOTIFY_URL_ERROR)


def parse_submission(body: bytes) -> list[TaskRequest]:
    """Parse and validate a submission body.

    The checks run in the API's order: the body is a JSON array, its size is 1 to 100, then each
    task in turn. The first failure is reported; keys the API does not know are ignored.

    Args:
        body: The raw request body.

    Returns:
        The tasks, in submission order.

    Raises:
        InvalidSubmission: With the API's error text.
    """
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise InvalidSubmission(NOT_AN_ARRAY_ERROR) from exc
    if not isinstance(payload, list):
        raise InvalidSubmission(NOT_AN_ARRAY_ERROR)
    if not MIN_BATCH_SIZE <= len(payload) <= MAX_BATCH_SIZE:
        raise InvalidSubmission(BATCH_SIZE_ERROR)

    tasks = []
    for task in payload:
        if not isinstance(task, dict):
            raise InvalidSubmission(NOT_AN_OBJECT_ERROR)
        domain = _required_text(task, "domain", DOMAIN_REQUIRED_ERROR)
        company_name = _required_text(task, "company_name", COMPANY_NAME_REQUIRED_ERROR)
        for name in _OPTIONAL_TEXT_FIELDS:
            value = task.get(name)
            if value is not None and not isinstance(value, str):
                raise InvalidSubmission(f"{name} must be a string")
        _check_notify_url(task.get("notify_url"))
        tasks.append(TaskRequest(domain, company_name, task.get("tracking_id")))
    return tasks
