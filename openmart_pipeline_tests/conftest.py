"""Shared fixtures: the emulator on loopback and the pipeline run as a user runs it.

The pipeline is run through the `openmart-pipeline run` command in a subprocess, against
the emulator over real HTTP, with its own DAGSTER_HOME, input and output folders.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pandas as pd
import pytest

from openmart_pipeline.emulator import EmulatorConfig, running_emulator
from openmart_pipeline.emulator.server import RunningEmulator

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
COMPANIES_CSV = REPO / "data" / "domains" / "companies_real.csv"
TEST_KEY = "test-key-0f9a"
# A tiny time scale keeps the 26 s hold and the task times to a few milliseconds.
FAST = 0.002
FINAL = frozenset({"found", "not_found", "errored", "cancelled"})


@dataclass
class PipelineRun:
    """What one `openmart-pipeline run` left behind."""

    returncode: int
    output: str
    domain_lookups: pd.DataFrame | None
    company_emails: pd.DataFrame | None


@dataclass
class Workspace:
    """Folders and settings of one pipeline under test."""

    root: Path
    base_url: str
    api_key: str = TEST_KEY

    @property
    def domains(self) -> Path:
        return self.root / "domains"

    @property
    def output(self) -> Path:
        return self.root / "output"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMART_")}
        env.update(
            OPENMART_API_KEY=self.api_key,
            OPENMART_BASE_URL=self.base_url,
            OPENMART_DOMAINS_PATH=str(self.domains),
            OPENMART_OUTPUT_PATH=str(self.output),
            OPENMART_POLL_INTERVAL_SECONDS="0.05",
            OPENMART_READS_PER_SECOND="500",
            DAGSTER_HOME=str(self.root / "dagster_home"),
        )
        env.update(extra)
        return env

    def add_table(self, name: str, source: Path | pd.DataFrame) -> Path:
        self.domains.mkdir(parents=True, exist_ok=True)
        target = self.domains / name
        if isinstance(source, pd.DataFrame):
            source.to_csv(target, index=False)
        else:
            shutil.copy(source, target)
        return target

    def start(self, *args: str, **extra_env: str) -> subprocess.Popen:
        """Start a run without waiting for it (for kill tests)."""
        (self.root / "dagster_home").mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(
            [sys.executable, "-m", "openmart_pipeline.cli", "run", *args],
            env=self.env(**extra_env),
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run(self, *args: str, timeout: float = 240, **extra_env: str) -> PipelineRun:
        """Run `openmart-pipeline run` to the end and read both output tables."""
        process = self.start(*args, **extra_env)
        output, _ = process.communicate(timeout=timeout)
        return PipelineRun(process.returncode, output, *self.tables())

    def tables(self) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
        found = []
        for name in ("domain_lookups", "company_emails"):
            folder = self.output / name
            found.append(pd.read_parquet(folder) if folder.exists() else None)
        return found[0], found[1]


@pytest.fixture
def emulator() -> Iterator[RunningEmulator]:
    """The emulator on a free loopback port, fast, unlimited credits, one valid key."""
    config = EmulatorConfig(time_scale=FAST, api_keys=frozenset({TEST_KEY}))
    with running_emulator(config) as running:
        yield running


@pytest.fixture
def workspace(tmp_path: Path, emulator: RunningEmulator) -> Workspace:
    return Workspace(root=tmp_path, base_url=emulator.base_url)


def accepted_domains(emulator: RunningEmulator) -> list[str]:
    """Every domain the emulator accepted a task for, once per acceptance."""
    return [task["domain"] for task in emulator.state.stats()["accepted"]]


def company_table(count: int, prefix: str) -> pd.DataFrame:
    """`count` made-up companies with unique domains `<prefix><i>.com`."""
    return pd.DataFrame(
        {
            "company_name": [f"{prefix.title()} Company {i}" for i in range(count)],
            "website": [f"https://www.{prefix}{i}.com/about" for i in range(count)],
        }
    )


def wait_for(condition, process, timeout: float = 60.0) -> None:
    """Wait until condition() holds, failing if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.01)


def at_once(calls: dict[str, Callable[[], T]], timeout: float = 300) -> dict[str, T]:
    """Run each call in its own thread, all at the same time, and return their results."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = {name: pool.submit(call) for name, call in calls.items()}
        return {name: future.result(timeout=timeout) for name, future in futures.items()}
