"""Parquet storage of the assets: one dataset folder per asset, one file per partition.

`<base>/<asset>/<partition>.parquet` lets `pandas.read_parquet("<base>/<asset>")` read
every partition as one table. The base is a local folder or any URL fsspec can write to
(`s3://bucket/prefix`), through universal-pathlib. Local files are written beside their
final name with a leading dot (which Parquet readers skip) and renamed into place, so a
reader never sees a half written file and the previous version stays readable until the
new one is complete.
"""

from __future__ import annotations

import uuid

import pandas as pd
import pyarrow.parquet as pq
from dagster import ConfigurableIOManagerFactory, InputContext, OutputContext, UPathIOManager
from upath import UPath

from openmart_pipeline.schemas import SCHEMAS, to_arrow


class ParquetIOManager(UPathIOManager):
    """Stores DataFrames as Parquet through each asset's explicit schema."""

    extension = ".parquet"

    def dump_to_path(self, context: OutputContext, obj: pd.DataFrame, path: UPath) -> None:
        table = to_arrow(obj, SCHEMAS[context.asset_key.path[-1]])
        write_table(table, path)

    def load_from_path(self, context: InputContext, path: UPath) -> pd.DataFrame:
        with path.open("rb") as handle:
            return pq.read_table(handle).to_pandas()


def write_table(table, path: UPath) -> None:
    """Write a Parquet file so that readers see the old file or the new one, never half.

    Locally the file is written under a hidden name and renamed into place; on object
    storage a single PUT already replaces the object whole.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.protocol not in ("", "file", "local"):
        with path.open("wb") as handle:
            pq.write_table(table, handle)
        return
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    with temporary.open("wb") as handle:
        pq.write_table(table, handle)
    temporary.rename(path)


class ParquetIOManagerFactory(ConfigurableIOManagerFactory):
    """Where the tables go: a local folder or any URL fsspec can write to."""

    base_path: str

    def create_io_manager(self, context) -> ParquetIOManager:
        return ParquetIOManager(base_path=UPath(self.base_path))


def read_table(base_path: str, asset: str, partition: str | None = None) -> pd.DataFrame:
    """Read one partition of an asset's table, or all of them when no partition is given."""
    folder = UPath(base_path) / asset
    if partition is not None:
        with (folder / f"{partition}{ParquetIOManager.extension}").open("rb") as handle:
            return pq.read_table(handle).to_pandas()
    return pq.read_table(folder.path, filesystem=folder.fs).to_pandas()
