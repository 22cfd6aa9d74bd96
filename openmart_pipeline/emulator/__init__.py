"""An emulator of Openmart's batch email lookup API, for tests and demos on loopback.

It follows the documented contract (authentication, the submission hold, validation texts,
batch status, task ids and task reads, credits) and can inject faults reproducibly.
"""

from openmart_pipeline.emulator.app import create_app
from openmart_pipeline.emulator.config import EmulatorConfig, FaultConfig
from openmart_pipeline.emulator.results import TaskOutcome, expected_outcome
from openmart_pipeline.emulator.server import running_emulator

__all__ = [
    "EmulatorConfig",
    "FaultConfig",
    "TaskOutcome",
    "create_app",
    "expected_outcome",
    "running_emulator",
]
