"""Specifications of the ledger: no lookup is bought twice, none is silently forgotten.

Every test works on a real SQLite file in a temporary folder.
"""

from __future__ import annotations

import random
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from openmart_pipeline.ledger import (
    BATCH_SIZE,
    Ledger,
    Plan,
    TaskOutcome,
    batch_key_for,
    batches_table,
)

REFRESH_SECONDS = 30 * 86_400
BATCH_ID = "2b0f8f0e-3a59-4c4e-9d6c-1f2a3b4c5d6e"


def lookup_ids(count: int, prefix: str = "lookup") -> list[str]:
    return [f"{prefix}-{number:04d}" for number in range(count)]


def new_ids(plan: Plan) -> list[str]:
    return [lookup_id for batch in plan.new for lookup_id in batch.lookup_ids]


def plan(ledger: Ledger, ids: list[str], run_id: str = "run-1", **options) -> Plan:
    options.setdefault("refresh_after_seconds", REFRESH_SECONDS)
    return ledger.plan(run_id, ids, **options)


def set_claimer(ledger: Ledger, batch_key: str, claimer: str) -> None:
    """Rewrite who claimed a batch, as if another process had planned it."""
    with sqlite3.connect(ledger.path) as conn:
        conn.execute(
            f"UPDATE {batches_table.name} SET claimer = ? WHERE batch_key = ?",
            (claimer, batch_key),
        )


def dead_pid() -> int:
    """The PID of a process of this host that has already exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def ledger(tmp_path):
    opened = Ledger(tmp_path / "state" / "ledger.sqlite")
    yield opened
    opened.dispose()


def test_plan_claims_new_lookups_in_batches_of_at_most_a_hundred(ledger):
    ids = lookup_ids(250)

    planned = plan(ledger, ids)

    assert [len(batch.lookup_ids) for batch in planned.new] == [100, 100, 50]
    assert sorted(new_ids(planned)) == ids
    assert not (planned.carried or planned.adopt or planned.wait or planned.unknown)
    for batch in planned.new:
        assert batch.state == "claimed"
        assert batch.batch_key == batch_key_for(batch.lookup_ids)
        stored = ledger.batch(batch.batch_key)
        assert stored is not None
        assert stored.state == "claimed"
        assert sorted(stored.lookup_ids) == sorted(batch.lookup_ids)


def test_plan_derives_batch_keys_from_the_lookups_they_carry(tmp_path):
    ids = lookup_ids(150)
    shuffled = random.Random(7).sample(ids, len(ids))
    first, second = Ledger(tmp_path / "a.sqlite"), Ledger(tmp_path / "b.sqlite")

    keys_first = {batch.batch_key for batch in plan(first, ids).new}
    keys_second = {batch.batch_key for batch in plan(second, shuffled, run_id="run-2").new}
    keys_other = {batch.batch_key for batch in plan(second, lookup_ids(150, "other")).new}

    assert keys_first == keys_second
    assert len(keys_first) == 2
    assert not keys_first & keys_other
    first.dispose()
    second.dispose()


def test_plan_puts_lookups_claimed_by_a_live_process_in_wait(ledger):
    ids = lookup_ids(150)
    first = plan(ledger, ids, run_id="run-1")

    second = plan(ledger, ids, run_id="run-2")

    assert second.new == []
    assert second.unknown == {}
    assert {b.batch_key for b in second.wait} == {b.batch_key for b in first.new}


def test_plan_adopts_a_submitted_batch_and_never_claims_it_again(ledger):
    ids = lookup_ids(40)
    (batch,) = plan(ledger, ids).new
    ledger.mark_submitted(batch.batch_key, BATCH_ID)

    for options in ({}, {"resubmit_unknown": True}, {"force_refresh": True}):
        later = plan(ledger, ids, run_id="run-2", **options)

        assert later.new == [], options
        assert [(b.batch_key, b.batch_id) for b in later.adopt] == [(batch.batch_key, BATCH_ID)]
        assert sorted(later.adopt[0].lookup_ids) == ids
    assert {r.batch_id for r in ledger.records(ids).values()} == {BATCH_ID}


@pytest.mark.parametrize("status", ["sent", "pending", "read_failed"])
def test_plan_adopts_a_submitted_batch_whose_results_are_not_final(ledger, status):
    ids = lookup_ids(3)
    (batch,) = plan(ledger, ids).new
    ledger.mark_submitted(batch.batch_key, BATCH_ID)
    outcomes = [TaskOutcome(lookup_id, status, task_id=None) for lookup_id in ids]
    ledger.record_results(batch.batch_key, outcomes, read=False)

    later = plan(ledger, ids, run_id="run-2")

    assert later.new == []
    assert [b.batch_key for b in later.adopt] == [batch.batch_key]


def test_plan_leaves_lookups_of_an_unknown_submission_unsent(ledger):
    ids = lookup_ids(30)
    (batch,) = plan(ledger, ids).new
    ledger.mark_unknown(batch.batch_key, "ReadTimeout after the request was sent")

    for run_id in ("run-2", "run-3"):
        later = plan(ledger, ids, run_id=run_id)

        assert later.new == []
        assert later.wait == []
        assert sorted(later.unknown) == ids
        assert later.unknown[ids[0]].message == "ReadTimeout after the request was sent"
    assert ledger.batch(batch.batch_key).state == "submit_unknown"


def test_plan_resubmits_an_unknown_submission_only_when_allowed(ledger):
    ids = lookup_ids(30)
    (batch,) = plan(ledger, ids).new
    ledger.mark_unknown(batch.batch_key, "the server answered 502")

    later = plan(ledger, ids, run_id="run-2", resubmit_unknown=True)

    assert sorted(new_ids(later)) == ids
    assert later.unknown == {}
    assert ledger.batch(batch.batch_key).state == "claimed"


def test_release_makes_the_lookups_new_again(ledger):
    ids = lookup_ids(30)
    (batch,) = plan(ledger, ids).new

    ledger.release(batch.batch_key)

    assert ledger.batch(batch.batch_key) is None
    assert ledger.records(ids) == {}
    later = plan(ledger, ids, run_id="run-2")
    assert [b.batch_key for b in later.new] == [batch.batch_key]
    assert later.wait == [] and later.unknown == {}


def record_found_and_not_found(ledger: Ledger, ids: list[str]) -> str:
    """Plan, submit and read one batch: even lookups found a mailbox, odd ones nothing."""
    (batch,) = plan(ledger, ids).new
    ledger.mark_submitted(batch.batch_key, BATCH_ID)
    outcomes = [
        TaskOutcome(lookup_id, "found", f"task-{n}", ((f"info@{lookup_id}.com", "valid"),))
        if n % 2 == 0
        else TaskOutcome(lookup_id, "not_found", f"task-{n}")
        for n, lookup_id in enumerate(ids)
    ]
    ledger.record_results(batch.batch_key, outcomes, read=True)
    return batch.batch_key


def test_recorded_results_are_carried_while_fresh(ledger):
    ids = lookup_ids(10)
    batch_key = record_found_and_not_found(ledger, ids)

    later = plan(ledger, ids, run_id="run-2")

    assert later.new == [] and later.adopt == [] and later.unknown == {}
    assert sorted(later.carried) == ids
    assert later.carried[ids[0]].status == "found"
    assert later.carried[ids[0]].mailboxes == ((f"info@{ids[0]}.com", "valid"),)
    assert later.carried[ids[1]].status == "not_found"
    assert later.carried[ids[1]].mailboxes == ()
    assert ledger.batch(batch_key).state == "read"


def test_recorded_results_are_new_again_when_refresh_is_forced(ledger):
    ids = lookup_ids(10)
    record_found_and_not_found(ledger, ids)

    later = plan(ledger, ids, run_id="run-2", force_refresh=True)

    assert later.carried == {}
    assert sorted(new_ids(later)) == ids


def test_recorded_results_are_new_again_once_older_than_the_refresh_age(ledger):
    ids = lookup_ids(10)
    record_found_and_not_found(ledger, ids)
    recorded_at = max(r.lookup_time for r in ledger.records(ids).values())

    still_fresh = plan(ledger, ids, run_id="run-2", now=recorded_at + REFRESH_SECONDS - 60)
    stale = plan(ledger, ids, run_id="run-3", now=recorded_at + REFRESH_SECONDS + 60)

    assert sorted(still_fresh.carried) == ids
    assert still_fresh.new == []
    assert stale.carried == {}
    assert sorted(new_ids(stale)) == ids


def test_plan_frees_lookups_claimed_by_a_dead_process_that_never_sent_them(ledger):
    ids = lookup_ids(20)
    (batch,) = plan(ledger, ids).new
    set_claimer(ledger, batch.batch_key, f"{socket.gethostname()}:{dead_pid()}")

    later = plan(ledger, ids, run_id="run-2")

    assert later.wait == [] and later.unknown == {}
    assert sorted(new_ids(later)) == ids


def test_plan_treats_a_send_by_a_dead_process_on_this_host_as_unknown(ledger):
    ids = lookup_ids(20)
    (batch,) = plan(ledger, ids).new
    ledger.mark_intended(batch.batch_key)
    set_claimer(ledger, batch.batch_key, f"{socket.gethostname()}:{dead_pid()}")

    later = plan(ledger, ids, run_id="run-2")

    assert later.wait == []
    assert later.new == []
    assert sorted(later.unknown) == ids
    assert ledger.batch(batch.batch_key).state == "submit_unknown"


def test_plan_waits_for_a_send_from_another_host_until_its_lease_ends(ledger):
    ids = lookup_ids(20)
    (batch,) = plan(ledger, ids).new
    ledger.mark_intended(batch.batch_key)
    set_claimer(ledger, batch.batch_key, "another-host.example:4242")
    claimed_at = ledger.batch(batch.batch_key).claimed_at

    within = plan(ledger, ids, run_id="run-2", now=claimed_at + ledger.claim_lease_seconds - 1)
    after = plan(ledger, ids, run_id="run-3", now=claimed_at + ledger.claim_lease_seconds + 1)

    assert [b.batch_key for b in within.wait] == [batch.batch_key]
    assert within.unknown == {} and within.new == []
    assert after.wait == [] and after.new == []
    assert sorted(after.unknown) == ids


def test_plan_claims_no_more_than_max_new_and_leaves_the_rest_over_budget(ledger):
    ids = lookup_ids(250)

    capped = plan(ledger, ids, max_new=150)

    claimed = new_ids(capped)
    assert len(claimed) == 150
    assert all(len(batch.lookup_ids) <= BATCH_SIZE for batch in capped.new)
    assert len(capped.over_budget) == 100
    assert sorted(claimed + capped.over_budget) == ids
    assert ledger.records(capped.over_budget) == {}

    rest = plan(ledger, ids, run_id="run-2")
    assert sorted(new_ids(rest)) == sorted(capped.over_budget)


def test_plan_with_a_zero_budget_claims_nothing(ledger):
    ids = lookup_ids(5)

    capped = plan(ledger, ids, max_new=0)

    assert capped.new == []
    assert capped.over_budget == ids
    assert ledger.records(ids) == {}


@pytest.mark.parametrize("round_number", range(3))
def test_plans_racing_over_the_same_lookups_claim_each_lookup_once(tmp_path, round_number):
    path = tmp_path / "ledger.sqlite"
    Ledger(path).dispose()  # both runs open a ledger that already exists
    ids = lookup_ids(300, prefix=f"round{round_number}")
    # Overlapping sets, as two runs over partly shared input would plan.
    wanted = {"run-a": ids[:220], "run-b": ids[80:]}
    start = threading.Barrier(len(wanted))
    plans: dict[str, Plan] = {}
    failures: list[BaseException] = []

    def run(run_id: str) -> None:
        ledger = Ledger(path)
        try:
            start.wait(timeout=10)
            plans[run_id] = plan(ledger, wanted[run_id], run_id=run_id)
        except BaseException as error:  # reported by the main thread below
            failures.append(error)
        finally:
            ledger.dispose()

    threads = [threading.Thread(target=run, args=(run_id,)) for run_id in wanted]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert failures == []
    claims = Counter(lookup_id for p in plans.values() for lookup_id in new_ids(p))
    assert sorted(claims) == ids
    assert set(claims.values()) == {1}
    for run_id, planned in plans.items():
        waited = {lookup_id for batch in planned.wait for lookup_id in batch.lookup_ids}
        assert set(wanted[run_id]) <= set(new_ids(planned)) | waited


def test_ledger_keeps_its_claims_across_reopening(tmp_path):
    path = tmp_path / "ledger.sqlite"
    ids = lookup_ids(10)
    first = Ledger(path)
    (batch,) = plan(first, ids).new
    first.mark_submitted(batch.batch_key, BATCH_ID)
    first.dispose()

    reopened = Ledger(path)
    later = plan(reopened, ids, run_id="run-2", now=time.time())
    reopened.dispose()

    assert later.new == []
    assert [b.batch_id for b in later.adopt] == [BATCH_ID]
