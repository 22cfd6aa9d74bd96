"""Specifications of the Openmart API client: retries, error mapping, parsing and secrets.

The API is mocked with respx, so no request leaves the process. Tenacity's waits go through
`asyncio.sleep`, which every test replaces with a recorder: retries cost no wall time and the
waits the client chose can be asserted.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import respx

import openmart_pipeline.resources.openmart as openmart_module
from openmart_pipeline import __version__
from openmart_pipeline.errors import (
    AuthenticationError,
    BatchValidationError,
    CreditLimitError,
    OpenmartError,
    SubmitOutcomeUnknown,
    TransientApiError,
    UnexpectedResponseError,
    UnknownStatusError,
)
from openmart_pipeline.resources.openmart import (
    SUBMIT_PATH,
    OpenmartClient,
    OpenmartResource,
    check_base_url,
)
from openmart_pipeline.resources.responses import BatchStatus, Mailbox, TaskResult

# A reserved TLD: even if a route were not mocked, nothing could be reached.
BASE_URL = "https://api.openmart.test"
CANARY_KEY = "om-canary-7f3a9c2e5b8d41f6a0c3e9d2b7f4a1c8"
BATCH_ID = "2b0f8f0e-3a59-4c4e-9d6c-1f2a3b4c5d6e"
TASK_ID = "task-0001"
STATUS_PATH = f"/api/v1/task/batch/{BATCH_ID}/status"
TASK_IDS_PATH = f"/api/v1/task/batch/{BATCH_ID}/task_ids"
TASK_PATH = f"/api/v1/task/{TASK_ID}"
CREDIT_PATH = "/api/v2/credit-balance"
READ_ATTEMPTS = 4

SAMPLE_TASKS = [
    {"domain": "milvali.com", "company_name": "Milvali", "tracking_id": "row-0"},
    {"domain": "acme.com", "company_name": "", "tracking_id": "row-1"},
    {"domain": "", "company_name": "Globex", "tracking_id": "row-2"},
]
SAMPLE_ACCEPTED = {
    "batch_id": BATCH_ID,
    "submit_for": "lookup_business_email",
    "status": {"processing": 3, "completed": 0, "errored": 0, "total": 3, "batch_ready": False},
}
SAMPLE_STATUS = {"processing": 0, "completed": 97, "errored": 3, "total": 100, "batch_ready": True}
SAMPLE_TASK_IDS = ["task-0001", "task-0002"]
SAMPLE_TASK = {
    "task_id": TASK_ID,
    "status": "COMPLETED",
    "tracking_id": "row-0",
    "data": [{"email": "info@milvali.com", "status": "valid"}],
}

Call = Callable[[OpenmartClient], Awaitable[Any]]


def submit(client: OpenmartClient) -> Awaitable[Any]:
    return client.submit_batch(SAMPLE_TASKS, label="batch 1/1")


def read_status(client: OpenmartClient) -> Awaitable[Any]:
    return client.batch_status(BATCH_ID)


def read_task_ids(client: OpenmartClient) -> Awaitable[Any]:
    return client.list_task_ids(BATCH_ID, status="COMPLETED")


def read_task(client: OpenmartClient) -> Awaitable[Any]:
    return client.read_task(TASK_ID)


def read_credit(client: OpenmartClient) -> Awaitable[Any]:
    return client.credit_balance()


def make_client(**overrides: Any) -> OpenmartClient:
    settings: dict[str, Any] = {
        "api_key": CANARY_KEY,
        "base_url": BASE_URL,
        "retry_initial_seconds": 0.01,
        "read_attempts": READ_ATTEMPTS,
        "reads_per_second": 1000.0,
    }
    settings.update(overrides)
    return OpenmartClient(**settings)


def run(call: Call, **overrides: Any) -> Any:
    """Open a client, await `call(client)` on a fresh event loop and return its result."""

    async def go() -> Any:
        async with make_client(**overrides) as client:
            return await call(client)

    return asyncio.run(go())


def error_text(error: BaseException) -> str:
    """Everything a log would show of an error: its message, repr and printed traceback."""
    return f"{error}\n{error!r}\n{''.join(traceback.format_exception(error))}"


@pytest.fixture(autouse=True)
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The seconds each retry wait asked for; the waits themselves take no time."""
    recorded: list[float] = []
    real_sleep = asyncio.sleep
    slept = [0.0]

    async def record(seconds: float, *args: Any, **kwargs: Any) -> None:
        recorded.append(seconds)
        slept[0] += seconds
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", record)
    # The client's read pause after a 429 reads this clock: it moves as if the sleeps were real.
    monkeypatch.setattr(openmart_module, "_clock", lambda: time.monotonic() + slept[0])
    return recorded


@pytest.fixture
def api():
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as mock:
        yield mock


def accepted() -> httpx.Response:
    return httpx.Response(200, json=SAMPLE_ACCEPTED)


def every_time(make: Callable[[], Any]) -> Callable[[httpx.Request], httpx.Response]:
    """A respx side effect answering every request with a fresh response or error."""

    def answer(request: httpx.Request) -> httpx.Response:
        outcome = make()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return answer


# ---------------------------------------------------------------------------------------------
# Submissions are paid: resent only when the failure proves the server never saw them.
# ---------------------------------------------------------------------------------------------


def test_submission_is_not_retried_after_a_read_timeout(api):
    route = api.post(SUBMIT_PATH).mock(side_effect=httpx.ReadTimeout("timed out"))

    with pytest.raises(SubmitOutcomeUnknown, match="not sent again"):
        run(submit)

    assert route.call_count == 1


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            id="remote-protocol-error",
        ),
        pytest.param(httpx.ReadError("connection reset by peer"), id="read-error"),
        pytest.param(httpx.WriteError("broken pipe"), id="write-error"),
        pytest.param(httpx.WriteTimeout("write timed out"), id="write-timeout"),
    ],
)
def test_submission_is_not_retried_after_a_dropped_connection(api, failure):
    route = api.post(SUBMIT_PATH).mock(side_effect=failure)

    with pytest.raises(SubmitOutcomeUnknown):
        run(submit)

    assert route.call_count == 1


@pytest.mark.parametrize("code", [500, 502, 503, 504])
def test_submission_is_not_retried_after_a_server_error(api, code):
    route = api.post(SUBMIT_PATH).mock(return_value=httpx.Response(code, text="upstream failed"))

    with pytest.raises(SubmitOutcomeUnknown, match=str(code)):
        run(submit)

    assert route.call_count == 1


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(lambda: httpx.Response(200, text="<html>ok</html>"), id="not-json"),
        pytest.param(
            lambda: httpx.Response(200, json={"submit_for": "lookup_business_email"}),
            id="no-batch-id",
        ),
        pytest.param(lambda: httpx.Response(200, json={"batch_id": 42}), id="numeric-batch-id"),
        pytest.param(lambda: httpx.Response(200, json=[BATCH_ID]), id="array"),
    ],
)
def test_submission_is_not_retried_after_an_unreadable_acceptance(api, response):
    route = api.post(SUBMIT_PATH).mock(side_effect=[response(), accepted()])

    with pytest.raises(SubmitOutcomeUnknown, match="batch ID is unknown"):
        run(submit)

    assert route.call_count == 1


def test_submission_is_retried_after_a_refused_connection(api):
    route = api.post(SUBMIT_PATH).mock(
        side_effect=[httpx.ConnectError("connection refused"), accepted()]
    )

    batch = run(submit)

    assert batch.batch_id == BATCH_ID
    assert route.call_count == 2


def test_submission_is_retried_after_a_rate_limit_honouring_retry_after(api, waits):
    route = api.post(SUBMIT_PATH).mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "0.3"}), accepted()]
    )

    batch = run(submit)

    assert batch.batch_id == BATCH_ID
    assert route.call_count == 2
    assert waits == [pytest.approx(0.3)]


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(lambda: httpx.ConnectError("connection refused"), id="connect-error"),
        pytest.param(lambda: httpx.ConnectTimeout("connect timed out"), id="connect-timeout"),
        pytest.param(lambda: httpx.Response(429), id="429"),
    ],
)
def test_submission_gives_up_after_its_attempts_when_never_accepted(api, failure):
    route = api.post(SUBMIT_PATH).mock(side_effect=every_time(failure))

    with pytest.raises(TransientApiError) as caught:
        run(submit, submit_attempts=3)

    assert not isinstance(caught.value, SubmitOutcomeUnknown)
    assert route.call_count == 3


def test_submission_accepted_returns_the_batch_id_and_first_counts(api):
    api.post(SUBMIT_PATH).mock(return_value=accepted())

    batch = run(submit)

    assert batch.batch_id == BATCH_ID
    assert batch.status == BatchStatus(
        processing=3, completed=0, errored=0, total=3, batch_ready=False
    )


@pytest.mark.parametrize(
    ("detail", "index", "tracking_id", "field"),
    [
        pytest.param("company_name is required", 1, "row-1", "company_name", id="company-name"),
        pytest.param("Domain is required", 2, "row-2", "domain", id="domain"),
    ],
)
@pytest.mark.parametrize("code", [400, 422])
def test_submission_rejection_names_the_task_its_tracking_id_and_the_field(
    api, code, detail, index, tracking_id, field
):
    route = api.post(SUBMIT_PATH).mock(return_value=httpx.Response(code, json={"detail": detail}))

    with pytest.raises(BatchValidationError) as caught:
        run(submit)

    message = str(caught.value)
    assert f"task {index}" in message
    assert tracking_id in message
    assert f"'{field}'" in message
    assert route.call_count == 1


def test_submission_rejection_of_the_batch_size_quotes_the_server(api):
    detail = "the number of tasks in each batch should be between 1 and 100"
    api.post(SUBMIT_PATH).mock(return_value=httpx.Response(400, json={"detail": detail}))

    with pytest.raises(BatchValidationError, match=detail):
        run(submit)


@pytest.mark.parametrize(
    ("code", "error", "hint"),
    [
        pytest.param(401, AuthenticationError, "OPENMART_API_KEY", id="401"),
        pytest.param(403, AuthenticationError, "account", id="403"),
        pytest.param(402, CreditLimitError, "credit limit", id="402"),
    ],
)
def test_submission_account_refusals_are_permanent_and_not_retried(api, code, error, hint):
    route = api.post(SUBMIT_PATH).mock(
        return_value=httpx.Response(code, json={"detail": "Invalid API Key"})
    )

    with pytest.raises(error, match=hint):
        run(submit)

    assert route.call_count == 1


# ---------------------------------------------------------------------------------------------
# Reads are free: retried with backoff, within bounds.
# ---------------------------------------------------------------------------------------------

EXPECTED_STATUS = BatchStatus(processing=0, completed=97, errored=3, total=100, batch_ready=True)
EXPECTED_TASK = TaskResult(
    task_id=TASK_ID,
    status="COMPLETED",
    tracking_id="row-0",
    mailboxes=(Mailbox("info@milvali.com", "valid"),),
)
READS = [
    pytest.param(read_status, STATUS_PATH, SAMPLE_STATUS, EXPECTED_STATUS, id="status"),
    pytest.param(read_task_ids, TASK_IDS_PATH, SAMPLE_TASK_IDS, SAMPLE_TASK_IDS, id="task-ids"),
    pytest.param(read_task, TASK_PATH, SAMPLE_TASK, EXPECTED_TASK, id="task"),
]
TRANSIENT_READ_FAILURES = [
    pytest.param(lambda: httpx.ConnectError("connection refused"), id="connect-error"),
    pytest.param(lambda: httpx.ReadTimeout("read timed out"), id="read-timeout"),
    pytest.param(lambda: httpx.RemoteProtocolError("dropped"), id="dropped"),
    pytest.param(lambda: httpx.Response(429), id="429"),
    pytest.param(lambda: httpx.Response(500), id="500"),
    pytest.param(lambda: httpx.Response(502), id="502"),
    pytest.param(lambda: httpx.Response(503), id="503"),
    pytest.param(lambda: httpx.Response(504), id="504"),
    pytest.param(lambda: httpx.Response(200, text="<html>busy</html>"), id="non-json-200"),
]


@pytest.mark.parametrize("failure", TRANSIENT_READ_FAILURES)
@pytest.mark.parametrize(("call", "path", "body", "expected"), READS)
def test_read_is_retried_after_a_transient_failure(api, call, path, body, expected, failure):
    route = api.get(path).mock(side_effect=[failure(), httpx.Response(200, json=body)])

    assert run(call) == expected
    assert route.call_count == 2


@pytest.mark.parametrize(("call", "path", "body", "expected"), READS)
def test_read_waits_as_long_as_retry_after_says(api, waits, call, path, body, expected):
    route = api.get(path).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "0.3"}),
            httpx.Response(429, headers={"Retry-After": "0.7"}),
            httpx.Response(200, json=body),
        ]
    )

    assert run(call) == expected
    assert route.call_count == 3
    assert waits == [pytest.approx(0.3), pytest.approx(0.7)]


def test_read_understands_retry_after_as_an_http_date(api, waits):
    when = email.utils.formatdate(time.time() + 5, usegmt=True)
    api.get(STATUS_PATH).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": when}),
            httpx.Response(200, json=SAMPLE_STATUS),
        ]
    )

    assert run(read_status) == EXPECTED_STATUS
    # The date has one-second resolution, so the wait is somewhat under 5 s, never over.
    assert len(waits) == 1
    assert 3.0 < waits[0] <= 5.0


@pytest.mark.parametrize(("call", "path", "body", "expected"), READS)
def test_read_gives_up_after_its_attempts(api, waits, call, path, body, expected):
    route = api.get(path).mock(return_value=httpx.Response(503))

    with pytest.raises(TransientApiError, match="503"):
        run(call)

    assert route.call_count == READ_ATTEMPTS
    assert len(waits) == READ_ATTEMPTS - 1


@pytest.mark.parametrize(
    ("code", "error"),
    [
        pytest.param(404, UnexpectedResponseError, id="404"),
        pytest.param(401, AuthenticationError, id="401"),
        pytest.param(403, AuthenticationError, id="403"),
    ],
)
@pytest.mark.parametrize(("call", "path", "body", "expected"), READS)
def test_read_is_not_retried_after_a_permanent_refusal(
    api, code, error, call, path, body, expected
):
    route = api.get(path).mock(return_value=httpx.Response(code, json={"detail": "Not Found"}))

    with pytest.raises(error):
        run(call)

    assert route.call_count == 1


def test_read_rate_limit_holds_at_most_the_configured_reads_in_any_second(api):
    starts: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        starts.append(time.monotonic())
        return httpx.Response(200, json=SAMPLE_STATUS)

    api.get(STATUS_PATH).mock(side_effect=answer)

    async def thirty_reads(client: OpenmartClient) -> list[BatchStatus]:
        return await asyncio.gather(*(client.batch_status(BATCH_ID) for _ in range(30)))

    results = run(thirty_reads, reads_per_second=20.0)

    assert len(results) == 30
    starts.sort()
    busiest = max(sum(1 for later in starts if first <= later < first + 1.0) for first in starts)
    assert busiest <= 21


# ---------------------------------------------------------------------------------------------
# Tolerant parsing: undocumented shapes are accepted, nonsense is named.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(["t-1", "t-2"], id="bare-array"),
        pytest.param({"task_ids": ["t-1", "t-2"]}, id="wrapped"),
        pytest.param({"task_ids": ["t-1", "t-2"], "count": 2}, id="wrapped-extra-fields"),
    ],
)
def test_task_ids_are_read_bare_or_wrapped(api, body):
    api.get(TASK_IDS_PATH).mock(return_value=httpx.Response(200, json=body))

    assert run(read_task_ids) == ["t-1", "t-2"]


def test_task_ids_filter_is_sent_as_the_status_parameter(api):
    route = api.get(TASK_IDS_PATH).mock(return_value=httpx.Response(200, json=[]))

    assert run(read_task_ids) == []
    assert route.calls.last.request.url.params["status"] == "COMPLETED"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(SAMPLE_STATUS, id="flat"),
        pytest.param({"batch_id": BATCH_ID, "status": SAMPLE_STATUS}, id="nested"),
        pytest.param({**SAMPLE_STATUS, "created_at": "2024-01-01T00:00:00Z"}, id="extra-fields"),
    ],
)
def test_batch_status_is_read_flat_or_nested(api, body):
    api.get(STATUS_PATH).mock(return_value=httpx.Response(200, json=body))

    assert run(read_status) == EXPECTED_STATUS


def test_batch_status_without_batch_ready_is_ready_when_nothing_is_processing(api):
    body = {"processing": 0, "completed": 2, "errored": 0, "total": 2}
    api.get(STATUS_PATH).mock(return_value=httpx.Response(200, json=body))

    assert run(read_status).batch_ready is True


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"data": None}, id="null"),
        pytest.param({}, id="missing"),
        pytest.param({"data": []}, id="empty"),
    ],
)
def test_task_without_data_has_no_mailboxes(api, data):
    body = {"task_id": TASK_ID, "status": "COMPLETED", "tracking_id": "row-0", **data}
    api.get(TASK_PATH).mock(return_value=httpx.Response(200, json=body))

    task = run(read_task)

    assert task.mailboxes == ()
    assert task.status == "COMPLETED"
    assert task.tracking_id == "row-0"


def test_task_extra_fields_are_ignored(api):
    body = {
        **SAMPLE_TASK,
        "submit_for": "lookup_business_email",
        "created_at": "2024-01-01T00:00:00Z",
        "data": [{"email": "info@milvali.com", "status": "valid", "source": "web"}],
    }
    api.get(TASK_PATH).mock(return_value=httpx.Response(200, json=body))

    assert run(read_task) == EXPECTED_TASK


def test_task_with_an_unknown_status_names_it(api):
    body = {**SAMPLE_TASK, "status": "QUEUED"}
    api.get(TASK_PATH).mock(return_value=httpx.Response(200, json=body))

    with pytest.raises(UnknownStatusError, match="QUEUED"):
        run(read_task)


@pytest.mark.parametrize(
    ("call", "path", "body"),
    [
        pytest.param(read_task_ids, TASK_IDS_PATH, {"ids": ["t-1"]}, id="task-ids-object"),
        pytest.param(read_task_ids, TASK_IDS_PATH, [1, 2], id="task-ids-numbers"),
        pytest.param(read_status, STATUS_PATH, ["done"], id="status-array"),
        pytest.param(read_status, STATUS_PATH, {"state": "done"}, id="status-no-counts"),
        pytest.param(read_status, STATUS_PATH, {"processing": "many"}, id="status-text-count"),
        pytest.param(read_task, TASK_PATH, {"id": TASK_ID}, id="task-no-task-id"),
        pytest.param(read_task, TASK_PATH, {"task_id": TASK_ID}, id="task-no-status"),
        pytest.param(
            read_task,
            TASK_PATH,
            {"task_id": TASK_ID, "status": "COMPLETED", "data": "info@x.com"},
            id="task-data-text",
        ),
        pytest.param(
            read_task,
            TASK_PATH,
            {"task_id": TASK_ID, "status": "COMPLETED", "data": [{"mail": "info@x.com"}]},
            id="task-data-no-email",
        ),
        pytest.param(read_credit, CREDIT_PATH, {"credits": 10}, id="credit-no-balance"),
    ],
)
def test_answer_not_understood_names_the_endpoint_and_quotes_it(api, call, path, body):
    api.get(path).mock(return_value=httpx.Response(200, json=body))

    with pytest.raises(UnexpectedResponseError) as caught:
        run(call)

    message = str(caught.value)
    assert path in message
    first_key_or_item = next(iter(body)) if body else None
    assert str(first_key_or_item) in message


def test_answer_not_understood_is_quoted_only_briefly(api):
    body = {"unexpected": "x" * 10_000}
    api.get(TASK_IDS_PATH).mock(return_value=httpx.Response(200, json=body))

    with pytest.raises(UnexpectedResponseError) as caught:
        run(read_task_ids)

    message = str(caught.value)
    assert "unexpected" in message
    assert len(message) < 500


# ---------------------------------------------------------------------------------------------
# What travels on the wire.
# ---------------------------------------------------------------------------------------------


def test_requests_carry_the_key_only_in_the_x_api_key_header(api):
    api.post(SUBMIT_PATH).mock(return_value=accepted())
    api.get(TASK_IDS_PATH).mock(return_value=httpx.Response(200, json=SAMPLE_TASK_IDS))

    async def submit_then_read(client: OpenmartClient) -> None:
        await submit(client)
        await read_task_ids(client)

    run(submit_then_read)

    assert len(api.calls) == 2
    for request, _ in api.calls:
        assert request.headers["X-API-Key"] == CANARY_KEY
        assert CANARY_KEY not in str(request.url)
        assert CANARY_KEY not in request.url.query.decode()
        assert CANARY_KEY not in request.content.decode()
        assert "Authorization" not in request.headers


def test_requests_name_the_package_and_its_version_in_the_user_agent(api):
    route = api.get(STATUS_PATH).mock(return_value=httpx.Response(200, json=SAMPLE_STATUS))

    run(read_status)

    assert f"openmart-pipeline/{__version__}" in route.calls.last.request.headers["User-Agent"]


def test_submission_is_given_a_timeout_of_at_least_a_minute(api):
    route = api.post(SUBMIT_PATH).mock(return_value=accepted())

    run(submit)

    timeout = route.calls.last.request.extensions["timeout"]
    assert timeout["read"] >= 60
    assert timeout["write"] >= 60


def test_submission_timeout_under_a_minute_is_refused():
    with pytest.raises(ValueError, match="submit_timeout"):
        make_client(submit_timeout=30.0)


def test_submission_sends_the_tasks_as_a_json_array(api):
    route = api.post(SUBMIT_PATH).mock(return_value=accepted())

    run(submit)

    assert json.loads(route.calls.last.request.content) == SAMPLE_TASKS


# ---------------------------------------------------------------------------------------------
# Secrets never leak.
# ---------------------------------------------------------------------------------------------


def test_resource_repr_hides_the_api_key():
    resource = OpenmartResource(api_key=CANARY_KEY, base_url=BASE_URL)

    assert CANARY_KEY not in repr(resource)
    assert CANARY_KEY not in str(resource)
    assert BASE_URL in repr(resource)


def test_client_repr_hides_the_api_key():
    client = OpenmartResource(api_key=CANARY_KEY, base_url=BASE_URL).client()

    assert CANARY_KEY not in repr(client)
    assert CANARY_KEY not in str(client)
    assert BASE_URL in repr(client)


def test_client_without_a_key_says_to_set_openmart_api_key():
    with pytest.raises(AuthenticationError, match="OPENMART_API_KEY"):
        make_client(api_key="")


ECHO = f"invalid key {CANARY_KEY} for this account"
SECRET_ECHOES = [
    pytest.param(
        submit,
        "post",
        SUBMIT_PATH,
        400,
        {"detail": ECHO},
        id="submit-400-json",
    ),
    pytest.param(submit, "post", SUBMIT_PATH, 400, ECHO, id="submit-400-text"),
    pytest.param(submit, "post", SUBMIT_PATH, 401, {"detail": ECHO}, id="submit-401"),
    pytest.param(submit, "post", SUBMIT_PATH, 402, {"detail": ECHO}, id="submit-402"),
    pytest.param(submit, "post", SUBMIT_PATH, 500, {"detail": ECHO}, id="submit-500"),
    pytest.param(submit, "post", SUBMIT_PATH, 409, {"detail": ECHO}, id="submit-409"),
    pytest.param(submit, "post", SUBMIT_PATH, 200, ECHO, id="submit-200-text"),
    pytest.param(submit, "post", SUBMIT_PATH, 200, {"detail": ECHO}, id="submit-200-no-id"),
    pytest.param(read_status, "get", STATUS_PATH, 404, {"detail": ECHO}, id="read-404"),
    pytest.param(read_status, "get", STATUS_PATH, 503, {"detail": ECHO}, id="read-503"),
    pytest.param(read_status, "get", STATUS_PATH, 200, ECHO, id="read-200-text"),
    pytest.param(
        read_task,
        "get",
        TASK_PATH,
        200,
        {"detail": ECHO},
        id="read-task-200-unreadable",
    ),
    pytest.param(
        read_credit,
        "get",
        CREDIT_PATH,
        200,
        {"detail": ECHO},
        id="credit-200-unreadable",
    ),
]


@pytest.mark.parametrize(("call", "method", "path", "code", "body"), SECRET_ECHOES)
def test_errors_never_quote_the_api_key_even_when_the_server_echoes_it(
    api, call, method, path, code, body
):
    def answer() -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(code, text=body)
        return httpx.Response(code, json=body)

    api.route(method=method.upper(), path=path).mock(side_effect=every_time(answer))

    with pytest.raises(OpenmartError) as caught:
        run(call)

    assert CANARY_KEY not in error_text(caught.value)


# ---------------------------------------------------------------------------------------------
# The base URL: plain HTTP only on loopback.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://api.openmart.ai", id="remote-host"),
        pytest.param("http://10.0.0.5:8080", id="private-ip"),
        pytest.param("http://0.0.0.0:8080", id="any-address"),
        pytest.param("http://127.0.0.1.example.com", id="loopback-lookalike"),
        pytest.param("http://localhost.example.com", id="localhost-lookalike"),
        pytest.param("http://127.0.0.1@example.com", id="userinfo-trick"),
        pytest.param("HTTP://API.OPENMART.AI", id="uppercase-scheme"),
        pytest.param("ftp://api.openmart.ai", id="ftp"),
        pytest.param("api.openmart.ai", id="no-scheme"),
        pytest.param("https://", id="no-host"),
    ],
)
def test_base_url_is_refused_when_the_key_could_travel_in_clear(url):
    with pytest.raises(ValueError, match="OPENMART_BASE_URL"):
        check_base_url(url)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("http://127.0.0.1:8765", "http://127.0.0.1:8765", id="loopback-ip"),
        pytest.param("http://127.0.0.1:8765/", "http://127.0.0.1:8765", id="trailing-slash"),
        pytest.param("http://localhost:8765", "http://localhost:8765", id="localhost"),
        pytest.param("http://[::1]:8765", "http://[::1]:8765", id="ipv6-loopback"),
        pytest.param("https://api.openmart.ai", "https://api.openmart.ai", id="https"),
        pytest.param(" https://api.openmart.ai/ ", "https://api.openmart.ai", id="padded"),
    ],
)
def test_base_url_is_accepted_over_https_or_on_loopback(url, expected):
    assert check_base_url(url) == expected


def test_client_refuses_plain_http_to_a_remote_host():
    with pytest.raises(ValueError, match="not loopback"):
        make_client(base_url="http://api.openmart.ai")


def test_a_429_holds_back_the_other_reads_of_the_client_too(api, waits):
    api.get(STATUS_PATH).mock(return_value=httpx.Response(429, headers={"Retry-After": "2"}))
    api.get(TASK_PATH).mock(return_value=httpx.Response(200, json=SAMPLE_TASK))

    async def status_then_task(client: OpenmartClient) -> Any:
        with pytest.raises(TransientApiError):
            await read_status(client)
        return await read_task(client)

    run(status_then_task, read_attempts=1)

    assert waits and waits[-1] == pytest.approx(2.0, abs=0.1)


def test_a_429_halves_the_read_rate_which_recovers_with_answered_reads(api, waits):
    limited = httpx.Response(429, headers={"Retry-After": "1"})
    api.get(STATUS_PATH).mock(side_effect=[limited, limited])
    api.get(TASK_PATH).mock(return_value=httpx.Response(200, json=SAMPLE_TASK))

    async def limited_then_answered_then_limited(client: OpenmartClient) -> list[str]:
        messages = []
        with pytest.raises(TransientApiError) as first:
            await read_status(client)
        messages.append(str(first.value))
        for _ in range(50):
            await read_task(client)
        with pytest.raises(TransientApiError) as second:
            await read_status(client)
        messages.append(str(second.value))
        return messages

    first, second = run(limited_then_answered_then_limited, read_attempts=1)

    assert "reading at 500/s now" in first  # halved from the configured 1000/s
    assert "reading at 312.5/s now" in second  # back up to 625/s, then halved again
