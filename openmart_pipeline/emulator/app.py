"""The emulated Openmart API as a Starlette application.

Routes follow the documented contract: the batch submission (held ``hold_seconds`` before
anything else), the batch status, the batch's task ids, a task, and the credit balance. Two
admin routes without authentication, ``GET /_emulator/stats`` and ``POST /_emulator/credits``,
let tests and demos observe and steer a running emulator.

Order of work on a submission: hold; draw a fault (an HTTP error or a drop ends the request
with nothing created); authenticate; validate; check credits; create and charge the batch;
then ``accept_then_500``, ``accept_then_reset`` or ``malformed`` may spoil the answer. A
``malformed`` submission answer therefore comes after the batch was created and charged.

Order of work on a read: count it; apply the read rate limit; draw a fault; authenticate;
look the batch or task up.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from openmart_pipeline.emulator.config import UNLIMITED_BALANCE, EmulatorConfig
from openmart_pipeline.emulator.faults import (
    DroppedConnection,
    error_response,
    hide_injected_drops_from_server_log,
    malformed_response,
)
from openmart_pipeline.emulator.results import TASK_STATUSES
from openmart_pipeline.emulator.state import EmulatorState, NotEnoughCredits, retry_after_header
from openmart_pipeline.emulator.validation import InvalidSubmission, parse_submission

SUBMIT_PATH = "/api/v1/task/batch/lookup_business_email"
SUBMIT_FOR = "lookup_business_email"

_HTTP_ERROR_FAULTS = frozenset({"500", "502", "503", "429"})


def _detail(status_code: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


def _presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key is not None:
        return key.strip()
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def _auth_failure(state: EmulatorState, request: Request) -> Response | None:
    """Return the 401/403 answer for a request's key, or None when the key is good."""
    key = _presented_key(request)
    if key is not None and key in state.config.banned_keys:
        return _detail(403, "User is banned")
    if key is None or key not in state.config.api_keys:
        return _detail(401, "Invalid API Key")
    return None


async def _pre_handler_fault(state: EmulatorState, endpoint: str) -> tuple[str | None, Response]:
    """Draw a fault; return it and, when it ends the request before the handler, its answer."""
    kind = state.draw_fault(endpoint)
    faults = state.config.faults
    if kind in _HTTP_ERROR_FAULTS:
        state.note_fault(kind)
        return kind, error_response(kind, faults.retry_after_seconds)
    if kind == "reset":
        state.note_fault(kind)
        return kind, DroppedConnection()
    if kind == "slow":
        state.note_fault(kind)
        await asyncio.sleep(faults.slow_seconds)
    return kind, None


def _post_handler_fault(state: EmulatorState, kind: str | None, response: Response) -> Response:
    if kind == "malformed":
        state.note_fault(kind)
        return malformed_response(response)
    return response


def _read_route(
    endpoint: str, handler: Callable[[EmulatorState, Request], Response]
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a read handler with the read rate limit, fault injection and authentication."""

    async def endpoint_function(request: Request) -> Response:
        state: EmulatorState = request.app.state.emulator
        wait = state.admit_read()
        if wait is not None:
            return _detail(429, "Too Many Requests", {"Retry-After": retry_after_header(wait)})

        kind, early = await _pre_handler_fault(state, endpoint)
        if early is not None:
            return early
        response = _auth_failure(state, request) or handler(state, request)
        return _post_handler_fault(state, kind, response)

    return endpoint_function


async def submit_batch(request: Request) -> Response:
    """Handle ``POST /api/v1/task/batch/lookup_business_email``."""
    state: EmulatorState = request.app.state.emulator
    state.submission_started()
    try:
        await asyncio.sleep(state.config.hold_seconds * state.config.time_scale)

        kind, early = await _pre_handler_fault(state, "submit")
        if early is not None:
            return early

        failure = _auth_failure(state, request)
        if failure is not None:
            return _post_handler_fault(state, kind, failure)
        try:
            tasks = parse_submission(await request.body())
        except InvalidSubmission as exc:
            return _post_handler_fault(state, kind, _detail(400, exc.detail))
        try:
            batch = state.accept(tasks)
        except NotEnoughCredits:
            return _post_handler_fault(state, kind, _detail(402, "Credit limit reached"))

        if kind == "accept_then_500":
            state.note_fault(kind)
            return error_response("500", state.config.faults.retry_after_seconds)
        if kind == "accept_then_reset":
            state.note_fault(kind)
            return DroppedConnection()
        counts = state.batch_counts(batch.batch_id)
        answer = JSONResponse(
            {"batch_id": batch.batch_id, "submit_for": SUBMIT_FOR, "status": counts}
        )
        return _post_handler_fault(state, kind, answer)
    finally:
        state.submission_finished()


def _batch_status(state: EmulatorState, request: Request) -> Response:
    counts = state.batch_counts(request.path_params["batch_id"])
    if counts is None:
        return _detail(404, "Batch not found")
    return JSONResponse(counts)


def _batch_task_ids(state: EmulatorState, request: Request) -> Response:
    wanted = request.query_params.get("status")
    if wanted is not None:
        wanted = wanted.strip().upper()
        if wanted not in TASK_STATUSES:
            return _detail(400, f"status must be one of {', '.join(TASK_STATUSES)}")
    task_ids = state.batch_task_ids(request.path_params["batch_id"], wanted)
    if task_ids is None:
        return _detail(404, "Batch not found")
    return JSONResponse(task_ids)


def _task(state: EmulatorState, request: Request) -> Response:
    task = state.task_json(request.path_params["task_id"])
    if task is None:
        return _detail(404, "Task not found")
    return JSONResponse(task)


def _billing_period(now: datetime) -> tuple[str, str]:
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        end = start.replace(year=start.year + 1, month=1)
    else:
        end = start.replace(month=start.month + 1)
    return start.isoformat().replace("+00:00", "Z"), end.isoformat().replace("+00:00", "Z")


async def credit_balance(request: Request) -> Response:
    """Handle ``GET /api/v2/credit-balance``: the remaining credits of the current month."""
    state: EmulatorState = request.app.state.emulator
    failure = _auth_failure(state, request)
    if failure is not None:
        return failure
    balance = state.balance()
    period_start, period_end = _billing_period(datetime.now(UTC))
    return JSONResponse(
        {
            "period_start": period_start,
            "period_end": period_end,
            "balance": UNLIMITED_BALANCE if balance is None else balance,
        }
    )


async def emulator_stats(request: Request) -> Response:
    """Handle ``GET /_emulator/stats``: the counters of ``EmulatorState.stats``."""
    return JSONResponse(request.app.state.emulator.stats())


async def set_emulator_credits(request: Request) -> Response:
    """Handle ``POST /_emulator/credits`` with ``{"credits": N}`` or ``{"credits": null}``."""
    state: EmulatorState = request.app.state.emulator
    try:
        payload = json.loads(await request.body())
        credits = payload["credits"]
    except (ValueError, TypeError, KeyError):
        return _detail(400, 'body must be {"credits": <integer >= 0 or null>}')
    valid_number = isinstance(credits, int) and not isinstance(credits, bool) and credits >= 0
    if credits is not None and not valid_number:
        return _detail(400, "credits must be an integer >= 0 or null")
    state.set_credits(credits)
    return JSONResponse({"credits": credits})


def create_app(config: EmulatorConfig) -> Starlette:
    """Build the emulated API.

    Args:
        config: How the emulator behaves. It is used live, not copied: credits are spent from
            it and changes to it apply to the next request.

    Returns:
        The application; its ``EmulatorState`` is ``app.state.emulator``.
    """
    hide_injected_drops_from_server_log()
    routes = [
        Route(SUBMIT_PATH, submit_batch, methods=["POST"]),
        Route(
            "/api/v1/task/batch/{batch_id}/status",
            _read_route("status", _batch_status),
            methods=["GET"],
        ),
        Route(
            "/api/v1/task/batch/{batch_id}/task_ids",
            _read_route("task_ids", _batch_task_ids),
            methods=["GET"],
        ),
        Route("/api/v1/task/{task_id}", _read_route("task", _task), methods=["GET"]),
        Route("/api/v2/credit-balance", credit_balance, methods=["GET"]),
        Route("/_emulator/stats", emulator_stats, methods=["GET"]),
        Route("/_emulator/credits", set_emulator_credits, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.emulator = EmulatorState(config)
    return app
