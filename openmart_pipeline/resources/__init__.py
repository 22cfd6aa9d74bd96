"""Dagster resources: the Openmart API and the ledger of batches."""

from openmart_pipeline.resources.ledger import LedgerResource
from openmart_pipeline.resources.openmart import OpenmartClient, OpenmartResource

__all__ = ["LedgerResource", "OpenmartClient", "OpenmartResource"]
