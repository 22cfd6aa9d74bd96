"""Settings of the Openmart emulator: timing, accounts, credits and injected faults."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

ENDPOINTS = ("submit", "status", "task_ids", "task")
"""Endpoint names that fault rates are keyed by."""

READ_ENDPOINTS = ("status", "task_ids", "task")
"""Endpoints that count as reads for the read rate limit and the stats."""

COMMON_FAULT_KINDS = ("500", "502", "503", "429", "reset", "slow", "malformed")
"""Fault kinds every endpoint can inject."""

SUBMIT_ONLY_FAULT_KINDS = ("accept_then_500", "accept_then_reset")
"""Fault kinds of a submission only: the batch is created, then the answer fails."""

DEFAULT_API_KEY = "emulator-key"
UNLIMITED_BALANCE = 1_000_000_000
"""Balance reported by the credit-balance route when credits are unlimited."""


def fault_kinds_for(endpoint: str) -> tuple[str, ...]:
    """Return the fault kinds that may be configured for an endpoint.

    Args:
        endpoint: One of ``ENDPOINTS``.

    Raises:
        ValueError: If the endpoint is unknown.
    """
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {', '.join(ENDPOINTS)}")
    if endpoint == "submit":
        return COMMON_FAULT_KINDS + SUBMIT_ONLY_FAULT_KINDS
    return COMMON_FAULT_KINDS


@dataclass
class FaultConfig:
    """Which faults each endpoint injects, and how often.

    Every request to an endpoint draws one number from that endpoint's own
    ``random.Random(seed)``; the kinds of that endpoint split ``[0, 1)`` in a fixed order, so
    the same seed and the same sequence of requests give the same faults.

    Attributes:
        seed: Seed of the per-endpoint random generators.
        rates: Endpoint name (``submit``, ``status``, ``task_ids``, ``task``) to a mapping of
            fault kind to probability. The probabilities of one endpoint must sum to at most 1.
            Kinds: ``500``, ``502``, ``503``, ``429`` (with ``Retry-After``), ``reset`` (the
            connection is dropped mid-answer), ``slow`` (the answer is delayed by
            ``slow_seconds``), ``malformed`` (status 200 with a body that is not valid JSON);
            on ``submit`` only, ``accept_then_500`` and ``accept_then_reset`` (the batch is
            created and charged, then the client gets a 500 or a dropped connection).
        slow_seconds: Delay of a ``slow`` fault, in real seconds (not scaled by time_scale).
        retry_after_seconds: Value of ``Retry-After`` on an injected 429. A whole number is sent
            as an integer; a fraction is sent as a decimal, which is not standard HTTP but lets
            fast tests avoid whole-second waits.
    """

    seed: int = 0
    rates: dict[str, dict[str, float]] = field(default_factory=dict)
    slow_seconds: float = 5.0
    retry_after_seconds: float = 1.0

    def __post_init__(self) -> None:
        for endpoint, kinds in self.rates.items():
            allowed = fault_kinds_for(endpoint)
            for kind, rate in kinds.items():
                if kind not in allowed:
                    raise ValueError(
                        f"fault kind {kind!r} is not available on {endpoint!r}; "
                        f"expected one of {', '.join(allowed)}"
                    )
                if not 0.0 <= rate <= 1.0:
                    raise ValueError(f"rate of {endpoint}:{kind} must be in [0, 1], got {rate}")
            total = sum(kinds.values())
            if total > 1.0 + 1e-9:
                raise ValueError(f"fault rates of {endpoint!r} sum to {total}, more than 1")
        if self.slow_seconds < 0 or self.retry_after_seconds < 0:
            raise ValueError("slow_seconds and retry_after_seconds must not be negative")


@dataclass
class EmulatorConfig:
    """How the emulated Openmart API behaves.

    The object is live: the running emulator spends ``credits`` from it in place, and tests may
    change ``credits`` or replace ``faults`` between requests.

    Attributes:
        time_scale: Multiplier of every emulated duration (the submission hold and task times);
            0.01 makes a 26 s hold last 0.26 s. Fault delays are not scaled.
        hold_seconds: How long a submission is held before anything else happens, even when
            its body is invalid or its key is wrong (before scaling).
        max_task_seconds: Upper bound of the per-domain time a task stays ``PROCESSING`` after
            its batch is accepted (before scaling); see ``results.expected_outcome``.
        api_keys: Keys that are accepted.
        banned_keys: Keys of banned accounts; they answer 403 even if also listed as valid.
        credits: Remaining credits, or None for unlimited. Each accepted task costs one; a
            submission with more tasks than the remaining credits answers 402 and creates
            nothing.
        read_rate_limit: Most read requests (status, task_ids, task) admitted in any sliding
            one-second window, or None for no limit; beyond it reads answer 429.
        faults: Faults to inject.
    """

    time_scale: float = 1.0
    hold_seconds: float = 26.0
    max_task_seconds: float = 10.0
    api_keys: frozenset[str] = frozenset({DEFAULT_API_KEY})
    banned_keys: frozenset[str] = frozenset()
    credits: int | None = None
    read_rate_limit: float | None = None
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        if not math.isfinite(self.time_scale) or self.time_scale < 0:
            raise ValueError(f"time_scale must be a finite number >= 0, got {self.time_scale}")
        if self.hold_seconds < 0 or self.max_task_seconds < 0:
            raise ValueError("hold_seconds and max_task_seconds must not be negative")
        if self.credits is not None and self.credits < 0:
            raise ValueError(f"credits must be >= 0 or None, got {self.credits}")
        if self.read_rate_limit is not None and self.read_rate_limit <= 0:
            raise ValueError(f"read_rate_limit must be > 0 or None, got {self.read_rate_limit}")
        self.api_keys = frozenset(self.api_keys)
        self.banned_keys = frozenset(self.banned_keys)

    def __repr__(self) -> str:
        # Keys are secrets: a config printed in a log or a traceback must not show them.
        return (
            f"EmulatorConfig(time_scale={self.time_scale}, hold_seconds={self.hold_seconds}, "
            f"max_task_seconds={self.max_task_seconds}, api_keys=<{len(self.api_keys)} keys>, "
            f"banned_keys=<{len(self.banned_keys)} keys>, credits={self.credits}, "
            f"read_rate_limit={self.read_rate_limit}, faults={self.faults!r})"
        )
