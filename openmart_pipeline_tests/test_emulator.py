"""Specification of the Openmart emulator, exercised over real HTTP on loopback."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import pytest

from openmart_pipeline.emulator import (
    EmulatorConfig,
    FaultConfig,
    TaskOutcome,
    expected_outcome,
    running_emulator,
)
from openmart_pipeline.emulator.cli import config_from_args, configure_parser
from openmart_pipeline.emulator.server import check_loopback, serve

KEY = "emulator-key"
HEADERS = {"X-API-Key": KEY}
SUBMIT = "/api/v1/task/batch/lookup_business_email"
BALANCE = "/api/v2/credit-balance"
# 26 s of hold becomes 0.13 s; tasks finish within 0.05 s of acceptance.
FAST = 0.005
POLL_LIMIT_SECONDS = 10.0
BATCH_SIZE_TEXT = "the number of tasks in each batch should be between 1 and 100"

SAMPLE_TASK = {"domain": "milvali.com", "company_name": "Milvali", "tracking_id": "milvali-emails"}


def fast_config(**overrides) -> EmulatorConfig:
    return EmulatorConfig(**{"time_scale": FAST, **overrides})


@pytest.fixture(scope="module")
def shared():
    """One emulator for the tests that neither change its settings nor count globally."""
    with running_emulator(fast_config()) as emulator:
        yield emulator


@pytest.fixture
def client():
    with httpx.Client(headers=HEADERS, timeout=30.0) as http:
        yield http


def submit(client: httpx.Client, emulator, tasks, **kwargs) -> httpx.Response:
    return client.post(f"{emulator.base_url}{SUBMIT}", json=tasks, **kwargs)


def wait_until_ready(client: httpx.Client, emulator, batch_id: str) -> dict:
    deadline = time.monotonic() + POLL_LIMIT_SECONDS
    while time.monotonic() < deadline:
        counts = client.get(f"{emulator.base_url}/api/v1/task/batch/{batch_id}/status").json()
        if counts["batch_ready"]:
            return counts
        time.sleep(0.01)
    raise AssertionError(f"batch {batch_id} never became ready")


def submit_and_wait(client: httpx.Client, emulator, tasks) -> tuple[str, dict]:
    response = submit(client, emulator, tasks)
    assert response.status_code == 200, response.text
    batch_id = response.json()["batch_id"]
    return batch_id, wait_until_ready(client, emulator, batch_id)


def task_ids(client: httpx.Client, emulator, batch_id: str, status: str | None = None):
    params = {"status": status} if status else {}
    url = f"{emulator.base_url}/api/v1/task/batch/{batch_id}/task_ids"
    return client.get(url, params=params)


class StoppedClock:
    """A monotonic clock that only moves when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def forced_domain(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}.example"


# Submission: hold, answer, validation


def test_submission_is_held_before_answering_even_when_invalid():
    config = EmulatorConfig(time_scale=0.01)
    scaled_hold = config.hold_seconds * config.time_scale
    with running_emulator(config) as emulator, httpx.Client(headers=HEADERS) as client:
        for body in ([SAMPLE_TASK], []):
            started = time.monotonic()
            submit(client, emulator, body)
            assert time.monotonic() - started >= scaled_hold

        started = time.monotonic()
        submit(client, emulator, [SAMPLE_TASK], headers={"X-API-Key": "wrong"})
        assert time.monotonic() - started >= scaled_hold


def test_submission_answers_batch_id_and_nested_processing_counts(shared, client):
    response = submit(client, shared, [SAMPLE_TASK, {"domain": "a.com", "company_name": "A"}])

    assert response.status_code == 200
    body = response.json()
    assert uuid.UUID(body["batch_id"]).version == 4
    assert body["submit_for"] == "lookup_business_email"
    assert body["status"] == {
        "processing": 2,
        "completed": 0,
        "errored": 0,
        "total": 2,
        "batch_ready": False,
    }


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        pytest.param(b"not json", None, id="not-json"),
        pytest.param(json.dumps(SAMPLE_TASK).encode(), None, id="object-not-array"),
        pytest.param(b"[]", BATCH_SIZE_TEXT, id="empty-batch"),
        pytest.param(
            json.dumps([SAMPLE_TASK] * 101).encode(),
            BATCH_SIZE_TEXT,
            id="101-tasks",
        ),
        pytest.param(b'[{"company_name": "A"}]', "Domain is required", id="missing-domain"),
        pytest.param(
            b'[{"domain": " ", "company_name": "A"}]', "Domain is required", id="blank-domain"
        ),
        pytest.param(
            b'[{"domain": "a.com"}]', "company_name is required", id="missing-company-name"
        ),
        pytest.param(
            b'[{"domain": "a.com", "company_name": null}]',
            "company_name is required",
            id="null-company-name",
        ),
        pytest.param(
            b'[{"domain": "a.com", "company_name": ""}]',
            "company_name is required",
            id="empty-company-name",
        ),
        pytest.param(
            b'[{"domain": "a.com", "company_name": "A"}, {"domain": "", "company_name": "B"}]',
            "Domain is required",
            id="second-task-invalid",
        ),
        pytest.param(b'["a.com"]', None, id="task-not-object"),
        pytest.param(
            b'[{"domain": "a.com", "company_name": "A", "notify_url": "ftp://x.example/h"}]',
            "notify_url must be a valid URL",
            id="notify-url-not-http",
        ),
        pytest.param(
            b'[{"domain": "a.com", "company_name": "A", "notify_url": "https://"}]',
            "notify_url must be a valid URL",
            id="notify-url-without-host",
        ),
    ],
)
def test_validation_rejects_a_bad_body_with_400_and_creates_nothing(shared, client, body, detail):
    before = shared.state.stats()["tasks_accepted"]

    response = client.post(
        f"{shared.base_url}{SUBMIT}", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    if detail is None:
        assert response.json()["detail"]
    else:
        assert response.json() == {"detail": detail}
    assert shared.state.stats()["tasks_accepted"] == before


def test_submission_ignores_unknown_keys_and_accepts_an_https_notify_url(shared, client):
    task = {
        **SAMPLE_TASK,
        "notify_url": "https://hooks.example/done",
        "colour": "blue",
        "city": "Austin",
        "state": "TX",
        "country": "US",
    }

    response = submit(client, shared, [task] * 100)

    assert response.status_code == 200
    assert response.json()["status"]["total"] == 100


# Authentication


@pytest.mark.parametrize(
    "headers",
    [{"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}],
    ids=["x-api-key", "bearer"],
)
def test_auth_accepts_both_documented_headers(shared, headers):
    with httpx.Client(headers=headers) as client:
        assert submit(client, shared, [SAMPLE_TASK]).status_code == 200
        assert client.get(f"{shared.base_url}{BALANCE}").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}],
    ids=["missing", "wrong-x-api-key", "wrong-bearer", "bearer-scheme-missing"],
)
def test_auth_rejects_missing_or_wrong_key_with_401_on_every_route(shared, headers):
    with httpx.Client(headers=headers) as client:
        batch_url = f"{shared.base_url}/api/v1/task/batch/{uuid.uuid4()}"
        answers = [
            submit(client, shared, [SAMPLE_TASK]),
            client.get(f"{batch_url}/status"),
            client.get(f"{batch_url}/task_ids"),
            client.get(f"{shared.base_url}/api/v1/task/{uuid.uuid4()}"),
            client.get(f"{shared.base_url}{BALANCE}"),
        ]

    assert [answer.status_code for answer in answers] == [401] * 5
    assert all(answer.json() == {"detail": "Invalid API Key"} for answer in answers)


def test_auth_answers_403_to_a_banned_key_and_creates_nothing():
    config = fast_config(banned_keys=frozenset({"banned-key"}))
    with running_emulator(config) as emulator, httpx.Client() as client:
        answer = submit(client, emulator, [SAMPLE_TASK], headers={"X-API-Key": "banned-key"})
        read = client.get(
            f"{emulator.base_url}{BALANCE}", headers={"Authorization": "Bearer banned-key"}
        )

        assert answer.status_code == 403
        assert read.status_code == 403
        assert "detail" in answer.json()
        assert emulator.state.stats()["tasks_accepted"] == 0


# Credits


def test_credits_are_spent_per_task_and_a_submission_beyond_them_answers_402():
    with (
        running_emulator(fast_config(credits=3)) as emulator,
        httpx.Client(headers=HEADERS) as client,
    ):
        balance_url = f"{emulator.base_url}{BALANCE}"
        assert client.get(balance_url).json()["balance"] == 3

        assert submit(client, emulator, [SAMPLE_TASK] * 2).status_code == 200
        assert client.get(balance_url).json()["balance"] == 1

        refused = submit(client, emulator, [SAMPLE_TASK] * 2)
        assert refused.status_code == 402
        assert "detail" in refused.json()
        assert client.get(balance_url).json()["balance"] == 1
        assert emulator.state.stats()["tasks_accepted"] == 2

        assert submit(client, emulator, [SAMPLE_TASK]).status_code == 200
        assert client.get(balance_url).json()["balance"] == 0


def test_credit_balance_reports_a_large_number_and_the_billing_period_when_unlimited(
    shared, client
):
    body = client.get(f"{shared.base_url}{BALANCE}").json()

    assert body["balance"] >= 1_000_000
    start = datetime.fromisoformat(body["period_start"])
    end = datetime.fromisoformat(body["period_end"])
    assert start.tzinfo is not None
    assert start < end


def test_credits_admin_route_sets_and_lifts_the_limit():
    with running_emulator(fast_config()) as emulator, httpx.Client(headers=HEADERS) as client:
        set_credits = client.post(f"{emulator.base_url}/_emulator/credits", json={"credits": 0})
        assert set_credits.json() == {"credits": 0}
        assert submit(client, emulator, [SAMPLE_TASK]).status_code == 402

        client.post(f"{emulator.base_url}/_emulator/credits", json={"credits": None})
        assert submit(client, emulator, [SAMPLE_TASK]).status_code == 200

        bad = client.post(f"{emulator.base_url}/_emulator/credits", json={"credits": -1})
        assert bad.status_code == 400
        assert emulator.config.credits is None


def test_credits_changed_on_the_live_config_apply_to_the_next_submission():
    with running_emulator(fast_config()) as emulator, httpx.Client(headers=HEADERS) as client:
        emulator.config.credits = 1

        assert submit(client, emulator, [SAMPLE_TASK] * 2).status_code == 402
        assert submit(client, emulator, [SAMPLE_TASK]).status_code == 200
        assert emulator.config.credits == 0


# Following a batch


def test_status_flat_counts_become_batch_ready_with_cancelled_counted_as_errored(shared, client):
    domains = [forced_domain("errored-"), forced_domain("cancelled-"), forced_domain("empty-")]
    domains += [f"acme{i}.com" for i in range(5)]
    expected = Counter(expected_outcome(domain).status for domain in domains)

    tasks = [{"domain": d, "company_name": d} for d in domains]
    _, counts = submit_and_wait(client, shared, tasks)

    assert counts == {
        "processing": 0,
        "completed": expected["COMPLETED"],
        "errored": expected["ERRORED"] + expected["CANCELLED"],
        "total": len(domains),
        "batch_ready": True,
    }


def test_task_ids_answer_a_bare_array_that_the_status_filter_narrows(shared, client):
    domains = [
        forced_domain("errored-"),
        forced_domain("cancelled-"),
        forced_domain("empty-"),
        forced_domain("empty-"),
    ]
    batch_id, _ = submit_and_wait(
        client, shared, [{"domain": d, "company_name": d} for d in domains]
    )

    everything = task_ids(client, shared, batch_id).json()
    completed = task_ids(client, shared, batch_id, "COMPLETED").json()
    errored = task_ids(client, shared, batch_id, "ERRORED").json()
    cancelled = task_ids(client, shared, batch_id, "cancelled").json()

    assert isinstance(everything, list) and len(set(everything)) == 4
    assert all(isinstance(task_id, str) for task_id in everything)
    assert everything[2:] == completed
    assert errored == everything[:1]
    assert cancelled == everything[1:2]
    assert task_ids(client, shared, batch_id, "PROCESSING").json() == []
    assert task_ids(client, shared, batch_id, "DONE").status_code == 400


def test_task_answers_its_mailboxes_and_tracking_id_once_completed(shared, client):
    domain = next(
        f"shop{i}.com" for i in range(1000) if len(expected_outcome(f"shop{i}.com").mailboxes) > 1
    )
    untracked = forced_domain("empty-")
    batch_id, _ = submit_and_wait(
        client,
        shared,
        [
            {"domain": domain, "company_name": "Shop", "tracking_id": "row-7"},
            {"domain": untracked, "company_name": "Nobody"},
        ],
    )
    first, second = task_ids(client, shared, batch_id).json()

    task = client.get(f"{shared.base_url}/api/v1/task/{first}").json()
    empty = client.get(f"{shared.base_url}/api/v1/task/{second}").json()

    assert task == {
        "task_id": first,
        "status": "COMPLETED",
        "tracking_id": "row-7",
        "data": [
            {"email": email, "status": status}
            for email, status in expected_outcome(domain).mailboxes
        ],
    }
    assert empty == {"task_id": second, "status": "COMPLETED", "tracking_id": None, "data": []}


def test_task_is_processing_with_empty_data_until_its_time():
    domains = (f"shop{i}.com" for i in range(1000))
    domain = next(d for d in domains if expected_outcome(d).mailboxes)
    outcome = expected_outcome(domain)
    with running_emulator(fast_config()) as emulator, httpx.Client(headers=HEADERS) as client:
        clock = emulator.state.clock = StoppedClock()
        answer = submit(client, emulator, [{"domain": domain, "company_name": "S"}])
        batch_id = answer.json()["batch_id"]
        (task_id,) = task_ids(client, emulator, batch_id, "PROCESSING").json()
        task_url = f"{emulator.base_url}/api/v1/task/{task_id}"
        status_url = f"{emulator.base_url}/api/v1/task/batch/{batch_id}/status"

        processing = client.get(task_url).json()
        counts_before = client.get(status_url).json()
        clock.now += outcome.task_seconds * FAST
        completed = client.get(task_url).json()
        counts_after = client.get(status_url).json()

    assert processing == {
        "task_id": task_id,
        "status": "PROCESSING",
        "tracking_id": None,
        "data": [],
    }
    assert (counts_before["processing"], counts_before["batch_ready"]) == (1, False)
    assert completed["status"] == "COMPLETED"
    assert len(completed["data"]) == len(outcome.mailboxes)
    assert (counts_after["completed"], counts_after["batch_ready"]) == (1, True)


@pytest.mark.parametrize("path", ["batch/{id}/status", "batch/{id}/task_ids", "{id}"])
def test_reads_of_an_unknown_id_answer_404_with_a_detail(shared, client, path):
    url = f"{shared.base_url}/api/v1/task/" + path.format(id=uuid.uuid4())

    response = client.get(url)

    assert response.status_code == 404
    assert response.json()["detail"]


# Outcomes


def test_expected_outcome_is_the_same_in_another_process():
    domains = ["milvali.com", "acme.io", "example.org"]
    code = (
        "import json; from openmart_pipeline.emulator import expected_outcome as e; "
        f"print(json.dumps([[e(d).status, e(d).mailboxes, e(d).task_seconds] for d in {domains}]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout

    here = [
        [o.status, [list(m) for m in o.mailboxes], o.task_seconds]
        for o in map(expected_outcome, domains)
    ]
    assert json.loads(output) == here
    assert expected_outcome("Milvali.com ") == expected_outcome("milvali.com")


@pytest.mark.parametrize(
    ("prefix", "status"),
    [("errored-", "ERRORED"), ("cancelled-", "CANCELLED"), ("empty-", "COMPLETED")],
)
def test_expected_outcome_prefix_of_the_first_label_forces_the_outcome(prefix, status):
    outcome = expected_outcome(f"{prefix}shop.example.com")

    assert outcome.status == status
    assert outcome.mailboxes == ()


def test_expected_outcome_mixes_outcomes_in_the_documented_shares():
    outcomes = [expected_outcome(f"company{i}.com", max_task_seconds=4.0) for i in range(5000)]
    kinds = Counter(
        "mailboxes" if o.mailboxes else ("empty" if o.status == "COMPLETED" else o.status)
        for o in outcomes
    )

    assert 0.70 < kinds["mailboxes"] / 5000 < 0.78
    assert 0.17 < kinds["empty"] / 5000 < 0.23
    assert 0.03 < kinds["ERRORED"] / 5000 < 0.05
    assert 0.01 < kinds["CANCELLED"] / 5000 < 0.03
    for outcome in outcomes:
        assert isinstance(outcome, TaskOutcome)
        assert 0.1 <= outcome.task_seconds <= 4.0
        assert len(outcome.mailboxes) <= 4
        for email, status in outcome.mailboxes:
            local, _, domain = email.partition("@")
            assert local in {"info", "support", "sales", "hello", "contact"}
            assert domain.startswith("company")
            assert status in {"valid", "accept_all", "unknown", "invalid", "risky"}


# Stats


def test_stats_list_every_accepted_task_and_the_peak_of_submissions_in_flight():
    # A long hold makes the three submissions overlap however slow the machine is.
    config = fast_config(hold_seconds=200.0)
    with running_emulator(config) as emulator:

        def submit_one(index: int) -> httpx.Response:
            with httpx.Client(headers=HEADERS, timeout=30) as client:
                task = {"domain": f"d{index}.com", "company_name": "D", "tracking_id": str(index)}
                return submit(client, emulator, [task])

        with ThreadPoolExecutor(max_workers=3) as pool:
            answers = list(pool.map(submit_one, range(3)))
        stats = httpx.get(f"{emulator.base_url}/_emulator/stats").json()

    assert stats["submissions_received"] == 3
    assert stats["submissions_accepted"] == 3
    assert stats["tasks_accepted"] == 3
    assert stats["max_submissions_in_flight"] == 3
    batch_ids = {answer.json()["batch_id"] for answer in answers}
    assert {entry["batch_id"] for entry in stats["accepted"]} == batch_ids
    assert sorted(entry["tracking_id"] for entry in stats["accepted"]) == ["0", "1", "2"]
    assert all(entry["task_id"] and entry["company_name"] == "D" for entry in stats["accepted"])


def test_stats_count_reads_and_the_busiest_second():
    with running_emulator(fast_config()) as emulator, httpx.Client(headers=HEADERS) as client:
        clock = emulator.state.clock = StoppedClock()
        task_url = f"{emulator.base_url}/api/v1/task/{uuid.uuid4()}"
        for _ in range(4):
            client.get(task_url)
        clock.now += 1.5
        for _ in range(2):
            client.get(task_url)
        client.get(f"{emulator.base_url}{BALANCE}")
        stats = emulator.state.stats()

    assert stats["reads"] == 6
    assert stats["max_reads_in_any_second"] == 4


def test_read_rate_limit_answers_429_with_retry_after_beyond_the_limit():
    with (
        running_emulator(fast_config(read_rate_limit=3)) as emulator,
        httpx.Client(headers=HEADERS) as client,
    ):
        clock = emulator.state.clock = StoppedClock()
        task_url = f"{emulator.base_url}/api/v1/task/{uuid.uuid4()}"
        within_one_second = [client.get(task_url) for _ in range(5)]
        clock.now += 1.0
        next_second = client.get(task_url)

    assert [answer.status_code for answer in within_one_second] == [404, 404, 404, 429, 429]
    assert within_one_second[3].headers["Retry-After"] == "1"
    assert next_second.status_code == 404
    assert emulator.state.stats()["reads"] == 6
    assert emulator.state.stats()["reads_rate_limited"] == 2


# Faults


def faulty(endpoint: str, kind: str, **fault_settings) -> FaultConfig:
    return FaultConfig(rates={endpoint: {kind: 1.0}}, **fault_settings)


def prepared_batch(client: httpx.Client, emulator) -> tuple[str, str]:
    batch_id, _ = submit_and_wait(client, emulator, [SAMPLE_TASK])
    (task_id,) = task_ids(client, emulator, batch_id).json()
    return batch_id, task_id


def read_url(emulator, endpoint: str, batch_id: str, task_id: str) -> str:
    paths = {
        "status": f"/api/v1/task/batch/{batch_id}/status",
        "task_ids": f"/api/v1/task/batch/{batch_id}/task_ids",
        "task": f"/api/v1/task/{task_id}",
    }
    return emulator.base_url + paths[endpoint]


@pytest.mark.parametrize("endpoint", ["status", "task_ids", "task"])
def test_faults_on_reads_each_happen_at_rate_one(endpoint):
    with (
        running_emulator(fast_config(credits=5)) as emulator,
        httpx.Client(headers=HEADERS) as client,
    ):
        batch_id, task_id = prepared_batch(client, emulator)
        url = read_url(emulator, endpoint, batch_id, task_id)

        for code in ("500", "502", "503"):
            emulator.state.set_faults(faulty(endpoint, code))
            assert client.get(url).status_code == int(code)

        emulator.state.set_faults(faulty(endpoint, "429", retry_after_seconds=2))
        limited = client.get(url)
        assert (limited.status_code, limited.headers["Retry-After"]) == (429, "2")

        emulator.state.set_faults(faulty(endpoint, "reset"))
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            client.get(url)

        emulator.state.set_faults(faulty(endpoint, "malformed"))
        malformed = client.get(url)
        assert malformed.status_code == 200
        with pytest.raises(ValueError):
            malformed.json()

        emulator.state.set_faults(faulty(endpoint, "slow", slow_seconds=0.2))
        started = time.monotonic()
        assert client.get(url).status_code == 200
        assert time.monotonic() - started >= 0.2

        injected = emulator.state.stats()["faults_injected"]
    kinds = ("500", "502", "503", "429", "reset", "malformed", "slow")
    assert injected == dict.fromkeys(kinds, 1)


@pytest.mark.parametrize("kind", ["500", "502", "503", "429", "reset"])
def test_faults_on_submission_before_acceptance_create_and_charge_nothing(kind):
    config = fast_config(credits=5, faults=faulty("submit", kind))
    with running_emulator(config) as emulator, httpx.Client(headers=HEADERS) as client:
        if kind == "reset":
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                submit(client, emulator, [SAMPLE_TASK])
        else:
            answer = submit(client, emulator, [SAMPLE_TASK])
            assert answer.status_code == int(kind)
            assert kind != "429" or answer.headers["Retry-After"] == "1"
        stats = emulator.state.stats()

    assert stats["tasks_accepted"] == 0
    assert stats["credits"] == 5
    assert stats["faults_injected"] == {kind: 1}


@pytest.mark.parametrize("kind", ["accept_then_500", "accept_then_reset", "malformed"])
def test_faults_on_submission_after_acceptance_still_create_and_charge_the_batch(kind):
    config = fast_config(credits=5, faults=faulty("submit", kind))
    with running_emulator(config) as emulator, httpx.Client(headers=HEADERS) as client:
        if kind == "accept_then_reset":
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                submit(client, emulator, [SAMPLE_TASK, SAMPLE_TASK])
        else:
            answer = submit(client, emulator, [SAMPLE_TASK, SAMPLE_TASK])
            if kind == "accept_then_500":
                assert answer.status_code == 500
            else:
                assert answer.status_code == 200
                with pytest.raises(ValueError):
                    answer.json()
        stats = emulator.state.stats()
        batch_id = stats["accepted"][0]["batch_id"]
        counts = wait_until_ready(client, emulator, batch_id)
        balance = client.get(f"{emulator.base_url}{BALANCE}").json()["balance"]

    assert stats["submissions_accepted"] == 1
    assert stats["tasks_accepted"] == 2
    assert counts["total"] == 2
    assert balance == 3
    assert stats["faults_injected"] == {kind: 1}


def test_faults_slow_submission_is_delayed_then_accepted():
    config = fast_config(faults=faulty("submit", "slow", slow_seconds=0.3))
    with running_emulator(config) as emulator, httpx.Client(headers=HEADERS) as client:
        started = time.monotonic()
        answer = submit(client, emulator, [SAMPLE_TASK])
        elapsed = time.monotonic() - started

    assert answer.status_code == 200
    assert elapsed >= 0.3 + config.hold_seconds * config.time_scale


def fault_sequence(seed: int) -> list[int]:
    faults = FaultConfig(seed=seed, rates={"task": {"503": 0.3, "500": 0.2}})
    with (
        running_emulator(fast_config(faults=faults)) as emulator,
        httpx.Client(headers=HEADERS) as client,
    ):
        return [
            client.get(f"{emulator.base_url}/api/v1/task/{uuid.uuid4()}").status_code
            for _ in range(30)
        ]


def test_faults_follow_the_same_sequence_for_the_same_seed():
    first = fault_sequence(seed=7)

    assert fault_sequence(seed=7) == first
    assert set(first) == {404, 500, 503}
    assert fault_sequence(seed=8) != first


@pytest.mark.parametrize(
    "rates",
    [
        {"task": {"accept_then_500": 0.5}},
        {"submit": {"teapot": 0.5}},
        {"search": {"500": 0.5}},
        {"task": {"500": 0.6, "503": 0.6}},
        {"task": {"500": 1.5}},
    ],
    ids=[
        "submit-only-kind-on-read",
        "unknown-kind",
        "unknown-endpoint",
        "sum-over-one",
        "rate-over-one",
    ],
)
def test_fault_config_rejects_rates_it_cannot_apply(rates):
    with pytest.raises(ValueError):
        FaultConfig(rates=rates)


# Serving and the command line


def test_server_refuses_an_address_that_is_not_loopback():
    with pytest.raises(ValueError, match="loopback"):
        check_loopback("0.0.0.0")
    with pytest.raises(ValueError, match="loopback"):
        serve(EmulatorConfig(), host="192.0.2.1", port=1)
    check_loopback("127.0.0.1")
    check_loopback("::1")


def test_server_stops_its_thread_when_the_context_exits():
    with running_emulator(fast_config()) as emulator:
        assert httpx.get(f"{emulator.base_url}/_emulator/stats").status_code == 200
        port = emulator.base_url.rsplit(":", 1)[1]

    assert not [t for t in threading.enumerate() if t.name == f"openmart-emulator-{port}"]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{emulator.base_url}/_emulator/stats", timeout=1)


def test_config_repr_hides_the_keys():
    config = EmulatorConfig(api_keys=frozenset({"sekrit-key"}), banned_keys=frozenset({"b4d"}))

    assert "sekrit-key" not in repr(config)
    assert "b4d" not in repr(config)


def test_cli_options_build_the_config(monkeypatch):
    monkeypatch.setenv("OPENMART_API_KEY", "from-env")
    parser = argparse.ArgumentParser()
    configure_parser(parser)

    defaults = config_from_args(parser.parse_args(["--port", "9"]))
    custom = config_from_args(
        parser.parse_args(
            [
                "--port",
                "9",
                "--api-key",
                "k1",
                "--api-key",
                "k2",
                "--banned-key",
                "b",
                "--credits",
                "40",
                "--time-scale",
                "0.5",
                "--read-rate-limit",
                "20",
                "--max-task-seconds",
                "3",
                "--fault-seed",
                "4",
                "--fault",
                "submit:503=0.1",
                "--fault",
                "submit:accept_then_reset=0.2",
                "--slow-seconds",
                "0.5",
            ]
        )
    )

    assert defaults.api_keys == {"from-env"}
    assert defaults.credits is None
    assert custom.api_keys == {"k1", "k2"}
    assert custom.banned_keys == {"b"}
    assert (custom.credits, custom.time_scale, custom.read_rate_limit) == (40, 0.5, 20.0)
    assert custom.max_task_seconds == 3.0
    assert custom.faults == FaultConfig(
        seed=4, rates={"submit": {"503": 0.1, "accept_then_reset": 0.2}}, slow_seconds=0.5
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["--port", "9", "--fault", "submit-503"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_serves_until_interrupted_and_never_logs_the_key():
    port = free_port()
    secret = f"secret-{uuid.uuid4().hex}"
    env = {**os.environ, "OPENMART_API_KEY": secret}
    command = [
        sys.executable,
        "-m",
        "openmart_pipeline.emulator",
        "--port",
        str(port),
        "--time-scale",
        "0.001",
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{base_url}/_emulator/stats", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        accepted = httpx.post(
            f"{base_url}{SUBMIT}", json=[SAMPLE_TASK], headers={"X-API-Key": secret}, timeout=10
        )
        refused = httpx.get(f"{base_url}{BALANCE}", headers={"Authorization": "Bearer nope-key"})
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=20)

    assert accepted.status_code == 200
    assert refused.status_code == 401
    assert process.returncode == 0
    assert f"127.0.0.1:{port}" in output
    assert secret not in output
    assert "nope-key" not in output
