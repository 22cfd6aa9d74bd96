"""Look up companies' shared mailboxes with Openmart's batch API, as Dagster assets."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("openmart-pipeline")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
