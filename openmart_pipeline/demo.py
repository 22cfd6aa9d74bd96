"""`make demo`: the main job on the bundled companies, against the emulator on loopback.

Starts the emulator on a free loopback port with a small time scale, runs
`openmart-pipeline run` against it exactly as against the real API (only the base URL and
the key differ), stops the emulator, and prints where the tables are.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from openmart_pipeline.cli import prepare_default_home

DEMO_KEY = "demo-key"
TIME_SCALE = "0.05"  # the 26 s hold becomes 1.3 s
STARTUP_SECONDS = 30.0


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_listening(base_url: str, process: subprocess.Popen, timeout: float) -> None:
    """Wait until the emulator answers; raise if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the emulator exited with code {process.returncode}")
        try:
            httpx.get(f"{base_url}/_emulator/stats", timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"the emulator did not answer at {base_url} within {timeout:.0f} s")


def main() -> int:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.update(
        OPENMART_API_KEY=DEMO_KEY,
        OPENMART_BASE_URL=base_url,
        OPENMART_POLL_INTERVAL_SECONDS="0.2",
        OPENMART_READS_PER_SECOND="200",
    )
    if not env.get("DAGSTER_HOME"):
        env["DAGSTER_HOME"] = str(prepare_default_home(Path(".dagster_home").resolve()))
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)

    command = [sys.executable, "-m", "openmart_pipeline.cli"]
    log_path = Path(env["DAGSTER_HOME"]) / "emulator.log"
    log = log_path.open("w")  # a file, not a pipe: nobody drains a pipe during the run
    emulator = subprocess.Popen(
        [*command, "emulator", "--port", str(port), "--time-scale", TIME_SCALE],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_listening(base_url, emulator, STARTUP_SECONDS)
        print(f"emulator listening on {base_url} (time scale {TIME_SCALE})", flush=True)
        code = subprocess.run([*command, "run"], env=env).returncode
        stats = httpx.get(f"{base_url}/_emulator/stats", timeout=5.0).json()
    finally:
        emulator.terminate()
        emulator.wait(timeout=15)
        log.close()

    print(
        f"the emulator accepted {stats['tasks_accepted']} tasks in "
        f"{stats['submissions_accepted']} submissions during this demo"
    )
    print(
        f"read them with: pandas.read_parquet('{env.get('OPENMART_OUTPUT_PATH', 'data/output')}"
        "/domain_lookups') and .../company_emails"
    )
    print(f"the emulator's log: {log_path}")
    print(f"browse the run: DAGSTER_HOME={env['DAGSTER_HOME']} .venv/bin/dagster dev")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
