"""Deterministic outcome of an emulated lookup: what a domain's task ends as, and when.

The outcome is derived from a SHA-256 digest of the normalised domain (never Python's salted
``hash``), so it is the same in every process and tests can predict it.

Roughly: 2% of domains end ``CANCELLED``, 4% ``ERRORED``, 20% ``COMPLETED`` with no mailbox and
the rest ``COMPLETED`` with one to four shared mailboxes. A first label starting with
``cancelled-``, ``errored-`` or ``empty-`` forces the matching outcome, so a test can choose.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

COMPLETED = "COMPLETED"
ERRORED = "ERRORED"
CANCELLED = "CANCELLED"
PROCESSING = "PROCESSING"
TASK_STATUSES = (PROCESSING, COMPLETED, ERRORED, CANCELLED)

MAILBOX_NAMES = ("info", "support", "sales", "hello", "contact")
EMAIL_STATUSES = ("valid", "accept_all", "unknown", "invalid", "risky")
MIN_TASK_SECONDS = 0.1

_CANCELLED_SHARE = 0.02
_ERRORED_SHARE = 0.04
_EMPTY_SHARE = 0.20


@dataclass(frozen=True)
class TaskOutcome:
    """What a task ends as.

    Attributes:
        status: Final task status: ``COMPLETED``, ``ERRORED`` or ``CANCELLED``.
        mailboxes: ``(email, email status)`` pairs the task returns once finished; empty unless
            the status is ``COMPLETED``.
        task_seconds: Seconds the task stays ``PROCESSING`` after acceptance, before the
            emulator's time_scale is applied; in ``[0.1, max_task_seconds]``.
    """

    status: str
    mailboxes: tuple[tuple[str, str], ...]
    task_seconds: float


def _normalise(domain: str) -> str:
    return domain.strip().lower().rstrip(".")


def _unit(digest: bytes, index: int) -> float:
    """Map four bytes of the digest to a number in [0, 1)."""
    chunk = digest[4 * index : 4 * index + 4]
    return int.from_bytes(chunk, "big") / 2**32


def expected_outcome(domain: str, max_task_seconds: float = 10.0) -> TaskOutcome:
    """Return the outcome the emulator gives a task for this domain.

    Args:
        domain: The task's domain, as submitted. Case and surrounding whitespace do not matter.
        max_task_seconds: Upper bound of ``task_seconds``; pass the emulator's
            ``EmulatorConfig.max_task_seconds`` to get the duration it will use.

    Returns:
        The deterministic outcome for the domain.
    """
    name = _normalise(domain)
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    low = min(MIN_TASK_SECONDS, max_task_seconds)
    task_seconds = low + (max_task_seconds - low) * _unit(digest, 1)

    first_label = name.split(".", 1)[0]
    if first_label.startswith("cancelled-"):
        return TaskOutcome(CANCELLED, (), task_seconds)
    if first_label.startswith("errored-"):
        return TaskOutcome(ERRORED, (), task_seconds)
    if first_label.startswith("empty-"):
        return TaskOutcome(COMPLETED, (), task_seconds)

    draw = _unit(digest, 0)
    if draw < _CANCELLED_SHARE:
        return TaskOutcome(CANCELLED, (), task_seconds)
    if draw < _CANCELLED_SHARE + _ERRORED_SHARE:
        return TaskOutcome(ERRORED, (), task_seconds)
    if draw < _CANCELLED_SHARE + _ERRORED_SHARE + _EMPTY_SHARE:
        return TaskOutcome(COMPLETED, (), task_seconds)

    count = 1 + digest[8] % 4
    # Rotate the fixed list of names so different domains get different mailboxes, no repeats.
    start = digest[9] % len(MAILBOX_NAMES)
    names = [MAILBOX_NAMES[(start + i) % len(MAILBOX_NAMES)] for i in range(count)]
    mailboxes = tuple(
        (f"{local}@{name}", EMAIL_STATUSES[digest[10 + i] % len(EMAIL_STATUSES)])
        for i, local in enumerate(names)
    )
    return TaskOutcome(COMPLETED, mailboxes, task_seconds)
