"""Progress of a run: batches submitted, ready and read, lookups done, time left.

The reporter is told about each step and speaks at a steady pace (not once per task): a
line to the Dagster log every `interval` seconds, and a live line on a terminal.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Progress:
    """Counts of a run's work, reported every `interval` seconds through `log`."""

    batches_total: int
    lookups_total: int
    log: Callable[[str], None]
    interval: float = 15.0
    live: bool = field(default_factory=lambda: sys.stderr.isatty())
    submitted: int = 0
    ready: int = 0
    read: int = 0
    lookups_done: int = 0
    _started: float = field(default_factory=time.monotonic)
    _last_report: float = field(default_factory=time.monotonic)

    def batch_submitted(self) -> None:
        self.submitted += 1
        self._maybe_report()

    def batch_ready(self) -> None:
        self.ready += 1
        self._maybe_report()

    def batch_read(self, lookups: int) -> None:
        self.read += 1
        self.lookups_done += lookups
        self._maybe_report()

    def summary(self) -> str:
        elapsed = time.monotonic() - self._started
        line = (
            f"batches submitted {self.submitted}/{self.batches_total}, ready {self.ready}, "
            f"finished {self.read}; lookups done {self.lookups_done}/{self.lookups_total}"
        )
        if 0 < self.lookups_done < self.lookups_total:
            left = elapsed / self.lookups_done * (self.lookups_total - self.lookups_done)
            line += f"; about {_duration(left)} left"
        return line + f" ({_duration(elapsed)} so far)"

    def tick(self) -> None:
        """Report now if the last report is older than the interval."""
        self._maybe_report()

    def finish(self) -> None:
        if self.live:
            sys.stderr.write("\r\033[K")
        self.log("done: " + self.summary())

    def _maybe_report(self) -> None:
        now = time.monotonic()
        if self.live:
            sys.stderr.write("\r\033[K" + self.summary())
            sys.stderr.flush()
        if now - self._last_report >= self.interval:
            self._last_report = now
            self.log(self.summary())


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 90:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"
