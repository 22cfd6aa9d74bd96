"""Command-line options of the emulator, shared by ``openmart-pipeline emulator`` and
``python -m openmart_pipeline.emulator``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from openmart_pipeline.emulator.config import DEFAULT_API_KEY, EmulatorConfig, FaultConfig
from openmart_pipeline.emulator.server import DEFAULT_HOST, check_loopback, serve

API_KEY_ENV = "OPENMART_API_KEY"

logger = logging.getLogger("openmart_pipeline.emulator")


def parse_fault(text: str) -> tuple[str, str, float]:
    """Parse ``ENDPOINT:KIND=RATE``, such as ``submit:accept_then_500=0.1``.

    Raises:
        argparse.ArgumentTypeError: If the text does not have that shape.
    """
    target, equals, rate_text = text.partition("=")
    endpoint, colon, kind = target.partition(":")
    if not (equals and colon and endpoint and kind):
        raise argparse.ArgumentTypeError(
            f"expected ENDPOINT:KIND=RATE such as task:503=0.1, got {text!r}"
        )
    try:
        rate = float(rate_text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"rate in {text!r} is not a number") from exc
    return endpoint.strip(), kind.strip(), rate


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to ``parser``."""
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="loopback address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--allow-non-loopback",
        action="store_true",
        help="allow a --host that is not a loopback address (exposes the emulator)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiplier of the submission hold and task times (default: %(default)s)",
    )
    parser.add_argument(
        "--credits", type=int, default=None, help="credits available (default: unlimited)"
    )
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help=f"accepted key, repeatable (default: ${API_KEY_ENV} if set, else {DEFAULT_API_KEY})",
    )
    parser.add_argument(
        "--banned-key",
        action="append",
        dest="banned_keys",
        default=[],
        metavar="KEY",
        help="key of a banned account, answered 403; repeatable",
    )
    parser.add_argument(
        "--read-rate-limit",
        type=float,
        default=None,
        help="most reads admitted per second before 429 (default: no limit)",
    )
    parser.add_argument(
        "--max-task-seconds",
        type=float,
        default=10.0,
        help="longest time a task stays PROCESSING, before scaling (default: %(default)s)",
    )
    parser.add_argument("--fault-seed", type=int, default=0, help="seed of fault draws")
    parser.add_argument(
        "--fault",
        action="append",
        dest="faults",
        type=parse_fault,
        default=[],
        metavar="ENDPOINT:KIND=RATE",
        help="inject a fault, e.g. submit:accept_then_500=0.1 or task:reset=0.05; repeatable",
    )
    parser.add_argument(
        "--slow-seconds", type=float, default=5.0, help="delay of a 'slow' fault (default: 5.0)"
    )


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Build the emulator configuration the parsed options describe.

    Raises:
        ValueError: If an option value is out of range or a fault is unknown.
    """
    api_keys = args.api_keys or [os.environ.get(API_KEY_ENV) or DEFAULT_API_KEY]
    rates: dict[str, dict[str, float]] = {}
    for endpoint, kind, rate in args.faults:
        rates.setdefault(endpoint, {})[kind] = rate
    faults = FaultConfig(seed=args.fault_seed, rates=rates, slow_seconds=args.slow_seconds)
    return EmulatorConfig(
        time_scale=args.time_scale,
        max_task_seconds=args.max_task_seconds,
        api_keys=frozenset(api_keys),
        banned_keys=frozenset(args.banned_keys),
        credits=args.credits,
        read_rate_limit=args.read_rate_limit,
        faults=faults,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Serve the emulator the options describe until SIGINT or SIGTERM.

    Returns:
        The process exit code: 0 after a clean stop, 2 when the options are invalid.
    """
    try:
        config = config_from_args(args)
        check_loopback(args.host, args.allow_non_loopback)
    except ValueError as exc:
        print(f"openmart emulator: {exc}", file=sys.stderr)
        return 2

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    credits = "unlimited" if config.credits is None else config.credits
    logger.info(
        "Openmart emulator listening on http://%s:%d (time scale %s, credits %s, %d keys)",
        args.host,
        args.port,
        config.time_scale,
        credits,
        len(config.api_keys),
    )
    serve(config, args.host, args.port, allow_non_loopback=args.allow_non_loopback)
    return 0
