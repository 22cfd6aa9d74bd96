"""Injected faults: which one a request gets, and the broken answers that carry them."""

from __future__ import annotations

import json
import logging
import random

from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from openmart_pipeline.emulator.config import ENDPOINTS, FaultConfig, fault_kinds_for


class InjectedConnectionDrop(Exception):
    """Raised after an answer has started so that the server closes the connection unfinished."""


class FaultPlan:
    """Draws the fault, if any, of each request from one seeded generator per endpoint."""

    def __init__(self, faults: FaultConfig) -> None:
        """Start the generators of every endpoint from ``faults.seed``.

        Args:
            faults: The fault settings this plan follows.
        """
        self.faults = faults
        self._generators = {endpoint: random.Random(faults.seed) for endpoint in ENDPOINTS}

    def draw(self, endpoint: str) -> str | None:
        """Return the fault kind of the next request to ``endpoint``, or None for no fault.

        One number is drawn per request whatever the rates are, so changing a rate does not
        shift which later requests fail.
        """
        point = self._generators[endpoint].random()
        rates = self.faults.rates.get(endpoint, {})
        threshold = 0.0
        for kind in fault_kinds_for(endpoint):
            threshold += rates.get(kind, 0.0)
            if point < threshold:
                return kind
        return None


def format_retry_after(seconds: float) -> str:
    """Render a ``Retry-After`` value: an integer when whole, else a short decimal."""
    if float(seconds).is_integer():
        return str(int(seconds))
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def error_response(kind: str, retry_after_seconds: float) -> Response:
    """Build the answer of an injected HTTP error fault (``500``, ``502``, ``503``, ``429``)."""
    if kind == "429":
        return JSONResponse(
            {"detail": "Too Many Requests"},
            status_code=429,
            headers={"Retry-After": format_retry_after(retry_after_seconds)},
        )
    if kind == "502":
        # Gateways answer in their own format, not the API's JSON.
        return PlainTextResponse("502 Bad Gateway", status_code=502)
    if kind == "503":
        return JSONResponse({"detail": "Service Unavailable"}, status_code=503)
    return JSONResponse({"detail": "Internal Server Error"}, status_code=500)


def malformed_response(response: Response) -> Response:
    """Return a 200 whose body is the first half of ``response``'s JSON, which cannot parse.

    Every body the API sends is a JSON object or array, and no proper prefix of one is valid
    JSON, so the result is always malformed.
    """
    body = bytes(response.body)
    cut = body[: max(1, len(body) // 2)]
    try:
        json.loads(cut)
    except ValueError:
        pass
    else:  # only reachable for a body that is not an object or array
        cut = cut + b"{"
    return Response(cut, status_code=200, media_type="application/json")


class DroppedConnection(Response):
    """An answer that announces a body, sends part of it, then makes the server drop the line."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        partial = b'{"detail": "'
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"4096"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": partial, "more_body": True})
        raise InjectedConnectionDrop("connection dropped by fault injection")


class _HideInjectedDrops(logging.Filter):
    """Keep deliberate connection drops out of the server's error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, InjectedConnectionDrop)


_DROP_FILTER = _HideInjectedDrops()


def hide_injected_drops_from_server_log() -> None:
    """Install, once, the filter that keeps injected drops out of uvicorn's error log."""
    logger = logging.getLogger("uvicorn.error")
    if _DROP_FILTER not in logger.filters:
        logger.addFilter(_DROP_FILTER)
