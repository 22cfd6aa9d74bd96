"""Run the Openmart emulator: ``python -m openmart_pipeline.emulator --port 8765``."""

import argparse
import sys

from openmart_pipeline.emulator.cli import configure_parser, run_from_args


def main() -> int:
    """Parse the command line and serve until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m openmart_pipeline.emulator",
        description="Serve an emulator of Openmart's batch email lookup API on loopback.",
    )
    configure_parser(parser)
    return run_from_args(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
