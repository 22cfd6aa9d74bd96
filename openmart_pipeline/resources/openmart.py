"""The Openmart batch API: an async client and the Dagster resource that configures it.

The client speaks four calls of the `lookup_business_email` flow (submit a batch, read its
status, list its task IDs, read a task) plus the free credit balance. Reads are retried
with exponential backoff and jitter, honouring `Retry-After`, and pass through one rate
limiter shared by every batch of the run. Submissions are paid and have no idempotency
key, so one is retried only when the failure proves it never reached the server.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from aiolimiter import AsyncLimiter
from dagster import ConfigurableResource
from pydantic import Field
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from openmart_pipeline import __version__
from openmart_pipeline.errors import (
    AuthenticationError,
    BatchValidationError,
    CreditLimitError,
    SubmitOutcomeUnknown,
    TransientApiError,
    UnexpectedResponseError,
)
from openmart_pipeline.resources.responses import (
    BatchStatus,
    SubmittedBatch,
    TaskResult,
    excerpt,
    parse_batch_status,
    parse_submission,
    parse_task,
    parse_task_ids,
)

DEFAULT_BASE_URL = "https://api.openmart.ai"
SUBMIT_PATH = "/api/v1/task/batch/lookup_business_email"
USER_AGENT = f"openmart-pipeline/{__version__} httpx/{httpx.__version__}"
RETRYABLE_STATUS_CODES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_SECONDS = 120.0
MIN_SUBMIT_TIMEOUT_SECONDS = 60.0

T = TypeVar("T")
# The clock of the shared read pause; tests that make sleeps instant advance their own.
_clock = time.monotonic

# Failures that prove a request never reached the server: no connection was opened.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class _SubmissionNotSent(TransientApiError):
    """A submission that provably did not reach the server (safe to send again)."""


def check_base_url(base_url: str) -> str:
    """Return the base URL without a trailing slash, refusing plain HTTP to a remote host.

    The key travels in a header on every request, so `http://` is only allowed on
    loopback, where the bundled emulator listens.

    Raises:
        ValueError: when the URL is not http(s), has no host, or is `http://` off loopback.
    """
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"OPENMART_BASE_URL must be an http(s) URL with a host, got {base_url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(
            f"OPENMART_BASE_URL {base_url!r} uses plain http to a host that is not loopback: "
            "the API key would travel in clear. Use https://, or http://127.0.0.1 for the "
            "emulator."
        )
    return base_url.strip().rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _retry_after_seconds(response: httpx.Response) -> float | None:
    """Read `Retry-After` as seconds (a number or an HTTP date), capped to a sane wait."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def read_limiter(reads_per_second: float) -> AsyncLimiter:
    """A leaky bucket that never lets more than `reads_per_second` start in any second.

    The bucket holds `burst` reads and drains at 95% of the rate less the burst, so a
    window of one second sees at most 95% of the rate. The small burst lets the client
    catch up after the event loop was busy, instead of losing that time for good.
    """
    burst = max(1, int(reads_per_second // 20))
    # 5% below the rate: requests leave the client a little unevenly, and the server counts
    # their arrival, not their start.
    drain = reads_per_second * 0.95 - burst
    if drain <= 0:
        return AsyncLimiter(1, 1.0 / reads_per_second)
    return AsyncLimiter(burst, burst / drain)


class _WaitForServer:
    """Tenacity wait: the server's `Retry-After` when it gave one, else backoff with jitter."""

    def __init__(self, initial: float, maximum: float) -> None:
        self._backoff = wait_exponential_jitter(initial=initial, max=maximum)

    def __call__(self, retry_state: Any) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, TransientApiError) and error.retry_after is not None:
            return error.retry_after
        return self._backoff(retry_state)


class OpenmartClient:
    """Async client of Openmart's batch API; open one per process and share it.

    Use it as an async context manager so its connection pool is closed::

        async with OpenmartClient(api_key=key, base_url=url) as client:
            batch = await client.submit_batch(tasks)

    Args:
        api_key: sent only in the `X-API-Key` header; never logged or put in an error.
        base_url: the API's root, e.g. `https://api.openmart.ai`.
        submit_timeout: seconds a submission may take; the server holds each one ~26 s.
        read_timeout: seconds a read (status, task IDs, task) may take.
        reads_per_second: the most reads started in any second, across the whole client.
        read_attempts: attempts per read before its failure is final.
        read_retry_seconds: total seconds one read may spend retrying.
        submit_attempts: attempts per submission, spent only on failures that prove the
            request never reached the server.
        retry_initial_seconds: first backoff wait; it doubles, with jitter, per attempt.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        submit_timeout: float = 90.0,
        read_timeout: float = 20.0,
        reads_per_second: float = 20.0,
        read_attempts: int = 6,
        read_retry_seconds: float = 120.0,
        submit_attempts: int = 5,
        retry_initial_seconds: float = 0.5,
    ) -> None:
        if not api_key:
            raise AuthenticationError(
                "No Openmart API key: set OPENMART_API_KEY to the key from your account."
            )
        if submit_timeout < MIN_SUBMIT_TIMEOUT_SECONDS:
            raise ValueError(
                f"submit_timeout must be at least {MIN_SUBMIT_TIMEOUT_SECONDS:.0f} s: the "
                "server holds every submission about 26 s before it answers"
            )
        self.base_url = check_base_url(base_url)
        self._api_key = api_key
        self._submit_timeout = submit_timeout
        self._read_attempts = read_attempts
        self._read_retry_seconds = read_retry_seconds
        self._submit_attempts = submit_attempts
        self._wait = _WaitForServer(retry_initial_seconds, maximum=30.0)
        self._configured_rate = reads_per_second
        self._read_rate = reads_per_second
        self._read_limiter = read_limiter(reads_per_second)
        self._reads_paused_until = 0.0
        self._reads_since_slow_down = 0
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"X-API-Key": api_key, "User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=httpx.Timeout(read_timeout, connect=10.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=40),
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"OpenmartClient(base_url={self.base_url!r})"

    async def __aenter__(self) -> OpenmartClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._http.aclose()

    async def submit_batch(
        self, tasks: Sequence[Mapping[str, Any]], label: str = "batch"
    ) -> SubmittedBatch:
        """Submit 1 to 100 tasks; the server holds the request about 26 s.

        Args:
            tasks: task objects as the API takes them (`domain`, `company_name`, ...).
            label: how messages name this batch, e.g. "batch 3/12".

        Raises:
            BatchValidationError: 400/422; names the task and field when it can tell.
            AuthenticationError: 401/403.
            CreditLimitError: 402; nothing was created.
            SubmitOutcomeUnknown: the request may have reached the server (a timeout after
                sending, a dropped connection, a 5xx, an answer without a batch ID).
            TransientApiError: it provably never reached the server, after every attempt.
        """
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._submit_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_SubmissionNotSent),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._submit_once(list(tasks), label)
        raise AssertionError("unreachable: tenacity reraises the last failure")

    async def _submit_once(self, tasks: list[Mapping[str, Any]], label: str) -> SubmittedBatch:
        endpoint = f"POST {SUBMIT_PATH} ({label})"
        try:
            response = await self._http.post(SUBMIT_PATH, json=tasks, timeout=self._submit_timeout)
        except NOT_SENT_ERRORS as error:
            raise _SubmissionNotSent(
                f"{endpoint}: could not connect ({type(error).__name__}); nothing was sent"
            ) from None
        except httpx.HTTPError as error:
            raise SubmitOutcomeUnknown(
                f"{endpoint}: {type(error).__name__} after the request was sent; the server "
                "may have created the batch, so it is not sent again"
            ) from None

        code = response.status_code
        if code == 429:
            raise _SubmissionNotSent(
                f"{endpoint}: rate limited (429)", retry_after=_retry_after_seconds(response)
            )
        if code in (400, 422):
            raise BatchValidationError(
                _validation_message(endpoint, response, tasks, self._api_key)
            )
        self._raise_for_account(endpoint, response)
        if code >= 500:
            raise SubmitOutcomeUnknown(
                f"{endpoint}: the server answered {code}; it may have created the batch anyway, "
                "so it is not sent again"
            )
        if code != 200 and code != 201:
            raise UnexpectedResponseError(
                f"{endpoint}: answered {code}: {excerpt(response.text, self._api_key)}"
            )
        try:
            return parse_submission(endpoint, response.json())
        except (json.JSONDecodeError, UnexpectedResponseError) as error:
            raise SubmitOutcomeUnknown(
                f"{endpoint}: accepted (200) but the answer could not be read, so the batch ID "
                f"is unknown: {excerpt(str(error) or response.text, self._api_key)}"
            ) from None

    async def batch_status(self, batch_id: str) -> BatchStatus:
        """Read a batch's task counts and whether it is ready."""
        path = f"/api/v1/task/batch/{batch_id}/status"
        return self._parse(parse_batch_status, path, await self._read_json(path))

    async def list_task_ids(self, batch_id: str, status: str | None = None) -> list[str]:
        """List a batch's task IDs, all of them or those with one status (e.g. COMPLETED)."""
        path = f"/api/v1/task/batch/{batch_id}/task_ids"
        params = {"status": status} if status else None
        return self._parse(parse_task_ids, path, await self._read_json(path, params))

    async def read_task(self, task_id: str) -> TaskResult:
        """Read one task: its status, its tracking ID and the mailboxes it found."""
        path = f"/api/v1/task/{task_id}"
        return self._parse(parse_task, path, await self._read_json(path))

    async def credit_balance(self) -> int:
        """Read the account's remaining credits (free)."""
        path = "/api/v2/credit-balance"
        body = await self._read_json(path)
        balance = body.get("balance") if isinstance(body, dict) else None
        if isinstance(balance, bool) or not isinstance(balance, int | float):
            shown = excerpt(json.dumps(body), self._api_key)
            raise UnexpectedResponseError(
                f"GET {path}: no numeric 'balance' in the answer: {shown}"
            )
        return int(balance)

    def _parse(self, parser: Callable[[str, Any], T], path: str, body: Any) -> T:
        """Parse an answer; an error quoting it has the key blanked out, keeping its type."""
        try:
            return parser(f"GET {path}", body)
        except UnexpectedResponseError as error:
            raise type(error)(str(error).replace(self._api_key, "***")) from None

    async def _read_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._read_attempts)
            | stop_after_delay(self._read_retry_seconds),
            wait=self._wait,
            retry=retry_if_exception_type(TransientApiError),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._read_once(path, params)
        raise AssertionError("unreachable: tenacity reraises the last failure")

    async def _read_once(self, path: str, params: Mapping[str, str] | None) -> Any:
        endpoint = f"GET {path}"
        limiter = self._read_limiter
        await self._wait_out_pause()
        async with limiter:
            # Reads queued at the limiter when a 429 arrived wait too.
            await self._wait_out_pause()
            try:
                response = await self._http.get(path, params=params)
            except httpx.HTTPError as error:
                raise TransientApiError(
                    f"{endpoint}: {type(error).__name__} talking to {self.base_url}"
                ) from None

        if response.status_code == 429:
            self._slow_down(_retry_after_seconds(response))
            raise TransientApiError(
                f"{endpoint}: the server answered 429 (rate limited; reading at "
                f"{self._read_rate:g}/s now; set OPENMART_READS_PER_SECOND below the "
                "account's limit)",
                retry_after=_retry_after_seconds(response),
            )
        if response.status_code in RETRYABLE_STATUS_CODES:
            raise TransientApiError(
                f"{endpoint}: the server answered {response.status_code}",
                retry_after=_retry_after_seconds(response),
            )
        self._speed_up()
        self._raise_for_account(endpoint, response)
        if response.status_code != 200:
            raise UnexpectedResponseError(
                f"{endpoint}: answered {response.status_code}: "
                f"{excerpt(response.text, self._api_key)}"
            )
        try:
            return response.json()
        except json.JSONDecodeError:
            # A garbled body on a read costs nothing to ask for again.
            raise TransientApiError(
                f"{endpoint}: the answer is not JSON: {excerpt(response.text, self._api_key)}"
            ) from None

    async def _wait_out_pause(self) -> None:
        """Hold a read while a 429's Retry-After runs: the server's limit is per account."""
        pause = self._reads_paused_until - _clock()
        if pause > 0:
            await asyncio.sleep(pause)

    def _slow_down(self, retry_after: float | None) -> None:
        """After a 429: pause every read, and halve the read rate, to an eighth at most.

        429s that arrive while a pause is already running belong to the same burst and do
        not halve the rate again.
        """
        wait = retry_after if retry_after is not None else 1.0
        now = _clock()
        if now >= self._reads_paused_until:
            floor = max(1.0, self._configured_rate / 8)
            self._read_rate = max(floor, self._read_rate / 2)
            self._read_limiter = read_limiter(self._read_rate)
            self._reads_since_slow_down = 0
        self._reads_paused_until = max(self._reads_paused_until, now + wait)

    def _speed_up(self) -> None:
        """After every 50 answered reads, win back a quarter of the rate, up to the setting."""
        if self._read_rate >= self._configured_rate:
            return
        self._reads_since_slow_down += 1
        if self._reads_since_slow_down >= 50:
            self._reads_since_slow_down = 0
            self._read_rate = min(self._configured_rate, self._read_rate * 1.25)
            self._read_limiter = read_limiter(self._read_rate)

    def _raise_for_account(self, endpoint: str, response: httpx.Response) -> None:
        code = response.status_code
        if code == 401:
            raise AuthenticationError(
                f"{endpoint}: 401, the API key was refused. Check OPENMART_API_KEY: it must be "
                "the key of your Openmart account, with no quotes or spaces."
            )
        if code == 403:
            raise AuthenticationError(
                f"{endpoint}: 403, the account is not allowed to use the API (banned or "
                "disabled). Check the account's standing with Openmart; retrying will not help."
            )
        if code == 402:
            raise CreditLimitError(
                f"{endpoint}: 402, the account's credit limit is reached and nothing was created"
            )


def _validation_message(
    endpoint: str, response: httpx.Response, tasks: Sequence[Mapping[str, Any]], secret: str
) -> str:
    """Say which task and field a 400/422 is about, as far as the server's detail tells."""
    try:
        detail = excerpt(str(response.json().get("detail")), secret)
    except (json.JSONDecodeError, AttributeError):
        detail = excerpt(response.text, secret)
    message = f"{endpoint}: the server refused the batch ({response.status_code}): {detail}"
    field = detail.split(" is required")[0].strip().lower() if "is required" in detail else None
    if field:
        for index, task in enumerate(tasks):
            if not str(task.get(field) or "").strip():
                return (
                    f"{message}; task {index} (tracking ID {task.get('tracking_id')}) has no "
                    f"'{field}'"
                )
    return message


class OpenmartResource(ConfigurableResource):
    """Connection settings for Openmart's batch API, shared by every batch of a run.

    Example::

        from dagster import Definitions, EnvVar

        defs = Definitions(
            assets=[...],
            resources={"openmart": OpenmartResource(api_key=EnvVar("OPENMART_API_KEY"))},
        )
    """

    api_key: str = Field(description="Openmart API key; set it with EnvVar('OPENMART_API_KEY').")
    base_url: str = Field(default=DEFAULT_BASE_URL, description="The API's root URL.")
    submit_timeout_seconds: float = Field(
        default=90.0, description="Timeout of one submission (the server holds it ~26 s)."
    )
    read_timeout_seconds: float = Field(default=20.0, description="Timeout of one read.")
    reads_per_second: float = Field(
        default=20.0, description="Most reads (status, task IDs, task) started per second."
    )
    max_submissions_in_flight: int = Field(
        default=8, description="Most submissions waiting on the server at once in one run."
    )
    read_attempts: int = Field(default=6, description="Attempts per read before it fails.")
    read_retry_seconds: float = Field(
        default=120.0, description="Total seconds one read may spend on retries."
    )
    retry_initial_seconds: float = Field(
        default=0.5, description="First backoff wait; it doubles, with jitter, per attempt."
    )
    poll_interval_seconds: float = Field(
        default=2.0, description="First wait between status reads; it grows to 15 s."
    )
    poll_deadline_seconds: float = Field(
        default=3600.0,
        description="How long a batch may stay not ready before its lookups are left "
        "'pending' for a later run to collect.",
    )

    def __repr_args__(self):  # keeps the key out of repr() and of any log that prints it
        for name, value in super().__repr_args__():
            yield name, ("***" if name == "api_key" else value)

    def client(self) -> OpenmartClient:
        """A new client with these settings; open it once per process with `async with`."""
        return OpenmartClient(
            api_key=self.api_key,
            base_url=self.base_url,
            submit_timeout=self.submit_timeout_seconds,
            read_timeout=self.read_timeout_seconds,
            reads_per_second=self.reads_per_second,
            read_attempts=self.read_attempts,
            read_retry_seconds=self.read_retry_seconds,
            retry_initial_seconds=self.retry_initial_seconds,
        )
