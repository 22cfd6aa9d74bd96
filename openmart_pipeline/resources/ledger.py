"""The ledger as a Dagster resource: where it lives and how long a claim is trusted."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from openmart_pipeline.ledger import Ledger


class LedgerResource(ConfigurableResource):
    """The ledger of batches: an SQLite file beside the outputs, or a database URL."""

    path: str = Field(
        description="The ledger's SQLite file (e.g. data/output/ledger.sqlite) or a database "
        "URL (postgresql://user@host/db) shared by runs on several machines."
    )
    claim_lease_seconds: float = Field(
        default=600.0,
        description="How long an unfinished claim by a process on another host is trusted.",
    )

    _ledger: Ledger | None = PrivateAttr(default=None)

    def open(self) -> Ledger:
        """The ledger, opened once per process."""
        if self._ledger is None:
            self._ledger = Ledger(self.path, claim_lease_seconds=self.claim_lease_seconds)
        return self._ledger
