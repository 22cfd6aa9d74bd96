"""Serving the emulator with uvicorn: in a background thread for tests, or in the foreground.

The emulator only listens on loopback unless the caller forces another address, so a test or a
demo can never expose it, or its keys, to a network.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn

from openmart_pipeline.emulator.app import create_app
from openmart_pipeline.emulator.config import EmulatorConfig
from openmart_pipeline.emulator.state import EmulatorState

DEFAULT_HOST = "127.0.0.1"
STARTUP_TIMEOUT_SECONDS = 10.0
# Held submissions would otherwise keep a stopping server alive for up to the full hold.
GRACEFUL_SHUTDOWN_SECONDS = 1

logger = logging.getLogger(__name__)


class EmulatorStartError(RuntimeError):
    """The emulator did not start answering in time."""


@dataclass(frozen=True)
class RunningEmulator:
    """A started emulator.

    Attributes:
        base_url: Root URL of the API, such as ``http://127.0.0.1:54321``.
        state: The live state, to inspect counters or change credits and faults.
        config: The live configuration.
    """

    base_url: str
    state: EmulatorState
    config: EmulatorConfig


def check_loopback(host: str, allow_non_loopback: bool = False) -> None:
    """Refuse an address that is not loopback unless the caller forces it.

    Raises:
        ValueError: If ``host`` is not a loopback address and ``allow_non_loopback`` is False.
    """
    if allow_non_loopback or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"refusing to listen on {host!r}: the emulator serves loopback addresses only "
            "(such as 127.0.0.1) unless non-loopback listening is explicitly allowed"
        )


def _uvicorn_config(app, access_log: bool, **kwargs) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        lifespan="off",
        access_log=access_log,
        log_level="info" if access_log else "warning",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        **kwargs,
    )


def _wait_until_answering(server: uvicorn.Server, thread: threading.Thread, base_url: str):
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise EmulatorStartError("the emulator's server thread stopped while starting")
        if server.started:
            try:
                httpx.get(f"{base_url}/_emulator/stats", timeout=1.0).raise_for_status()
                return
            except httpx.HTTPError:
                pass
        time.sleep(0.01)
    raise EmulatorStartError(
        f"the emulator did not answer at {base_url} within {STARTUP_TIMEOUT_SECONDS} s"
    )


@contextmanager
def running_emulator(config: EmulatorConfig | None = None) -> Iterator[RunningEmulator]:
    """Run the emulator on a free loopback port in a background thread.

    Args:
        config: How the emulator behaves; the defaults when None.

    Yields:
        The running emulator, answering requests.

    Example:
        >>> with running_emulator(EmulatorConfig(time_scale=0.01)) as emulator:
        ...     httpx.get(f"{emulator.base_url}/_emulator/stats").status_code
        200
    """
    config = config if config is not None else EmulatorConfig()
    app = create_app(config)
    # Naming the protocol matters: asyncio only disables Nagle's algorithm on sockets whose
    # protocol is TCP, and without that every keep-alive answer waits ~40 ms for an ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind((DEFAULT_HOST, 0))
    port = sock.getsockname()[1]
    base_url = f"http://{DEFAULT_HOST}:{port}"

    server = uvicorn.Server(_uvicorn_config(app, access_log=False, loop="asyncio"))
    thread = threading.Thread(
        target=server.run,
        kwargs={"sockets": [sock]},
        name=f"openmart-emulator-{port}",
        daemon=True,
    )
    thread.start()
    try:
        _wait_until_answering(server, thread, base_url)
        yield RunningEmulator(base_url, app.state.emulator, config)
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_TIMEOUT_SECONDS)
        sock.close()
        if thread.is_alive():
            logger.warning(
                "the emulator at %s did not stop within %s s", base_url, STARTUP_TIMEOUT_SECONDS
            )


def serve(
    config: EmulatorConfig,
    host: str = DEFAULT_HOST,
    port: int = 8765,
    *,
    allow_non_loopback: bool = False,
) -> None:
    """Serve the emulator in the foreground; return after SIGINT or SIGTERM.

    Must be called from the main thread, which receives the signals.

    Args:
        config: How the emulator behaves.
        host: Address to listen on; loopback only unless ``allow_non_loopback``.
        port: Port to listen on.
        allow_non_loopback: Allow a ``host`` that is not loopback.

    Raises:
        ValueError: If ``host`` is not loopback and that was not allowed.
    """
    check_loopback(host, allow_non_loopback)
    app = create_app(config)
    # The access log shows method, path and status only; keys travel in headers, never logged.
    server = uvicorn.Server(_uvicorn_config(app, access_log=True, host=host, port=port))

    # uvicorn re-sends a stop signal to the previous handler once it has shut down; a quiet
    # handler here turns that into a normal return instead of a KeyboardInterrupt traceback.
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in stop_signals}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
