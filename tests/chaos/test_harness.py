"""The chaos run's own logic, without any service: a check that cannot fail proves nothing, so
each one is shown a violation it must count, and the fault plan keeps its promises."""

from __future__ import annotations

import itertools
import random
import uuid

import pytest

from bench import chaos
from bench.chaos import checks, faults, processes
from bench.chaos.evidence import Evidence, StoredRow
from bench.chaos.records import FaultWindow, RequestRecord, Write


def ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def event(
    type_: str, stream_id: str, key_id: str | None = None, correlation_id: str | None = None
) -> StoredRow:
    return StoredRow(str(uuid.uuid4()), stream_id, type_, key_id, correlation_id)


def answered(
    status: int, started: float = 1.0, duration: float = 0.1, wrote: Write | None = None
) -> RequestRecord:
    return RequestRecord(started, duration, "POST", "/v1/assessments", status, str(uuid.uuid4()), wrote=wrote)


def evidence(**fields) -> Evidence:
    return Evidence(
        **{"requests": [], "windows": [], "exits": [], "unclean_stops": [], "idempotency": {}, **fields}
    )


def test_an_acknowledged_write_missing_from_the_store_is_lost():
    kept, lost, key = ids(3)
    store = [event("AssessmentCreated", kept), event("CandidateKeyIssued", kept, key)]
    requests = [
        answered(201, wrote=Write("create", kept)),
        answered(201, wrote=Write("issue", kept, (key,))),
        answered(201, wrote=Write("create", lost)),
        answered(200, wrote=Write("revoke", kept, (key,))),
    ]
    assert checks.lost_writes(evidence(requests=requests, store=store)).count == 2


def test_events_without_their_message_in_the_audit_queue_were_never_published():
    store = [event("AssessmentCreated", stream) for stream in ids(3)]
    found = evidence(store=store, published=[store[0].event_id, store[0].event_id, store[2].event_id])
    assert checks.never_published(found).count == 1


def test_a_fact_recorded_twice_counts_once_per_extra_event():
    stream, key = ids(2)
    store = [
        event("AssessmentCreated", stream),
        event("CandidateKeyIssued", stream, key),
        event("AssessmentDeleted", stream),
        event("CandidateKeyRevoked", stream, key),
        event("CandidateKeyRevoked", stream, key),  # the cascade's, after a reviewer's
    ]
    assert checks.applied_twice(evidence(store=store)).count == 1


def test_an_idempotency_key_whose_retries_created_twice_is_applied_twice():
    first, retry = ids(2)
    store = [
        event("AssessmentCreated", s, correlation_id=rid)
        for s, rid in zip(ids(2), (first, retry), strict=True)
    ]
    found = evidence(store=store, idempotency={"key-1": [first, retry]})
    assert checks.applied_twice(found).count == 1
    assert checks.applied_twice(evidence(store=store[:1], idempotency={"key-1": [first, retry]})).count == 0


def test_every_key_of_a_deleted_assessment_must_be_revoked_exactly_once():
    stream, revoked, forgotten = ids(3)
    store = [
        event("AssessmentCreated", stream),
        event("CandidateKeyIssued", stream, revoked),
        event("CandidateKeyIssued", stream, forgotten),
        event("AssessmentDeleted", stream),
        event("CandidateKeyRevoked", stream, revoked),
    ]
    check = checks.deleted_keys_not_revoked_once(evidence(store=store))
    assert check.count == 1
    assert forgotten in check.examples[0]


def test_a_5xx_counts_outside_the_fault_window_only_past_its_grace():
    window = FaultWindow("database refused", started=10.0, ended=12.0)
    in_grace = answered(503, started=12.0 + chaos.FAULT_GRACE_SECONDS - 0.5)
    past_grace = answered(503, started=12.0 + chaos.FAULT_GRACE_SECONDS + 0.5)
    found = evidence(requests=[in_grace, past_grace, answered(500, started=11.0)], windows=[window])
    assert checks.errors_outside_windows(found).count == 1
    assert checks.internal_errors(found).count == 1


def test_a_request_is_blamed_on_the_fault_going_on_rather_than_one_in_its_grace():
    earlier = FaultWindow("broker refused", started=1.0, ended=3.0)
    later = FaultWindow("database refused", started=4.0, ended=6.0)
    found = evidence(windows=[earlier, later])
    assert checks.in_window(found, 3.99, 4.05) is later
    assert checks.in_window(found, 3.5, 3.6) is earlier
    assert checks.in_window(found, 9.0, 9.1) is None


def test_slow_unanswered_and_503_without_retry_after_are_counted():
    slow = answered(201, duration=chaos.REQUEST_BOUND_SECONDS + 0.1)
    unanswered = RequestRecord(1.0, 30.0, "GET", "/v1/assessments", None, "rid", error="ReadTimeout")
    bare_503 = answered(503)
    found = evidence(requests=[slow, unanswered, bare_503, answered(201)])
    assert checks.slow_requests(found).count == 2
    assert checks.unanswered(found).count == 1
    assert checks.unavailable_without_retry_after(found).count == 1


@pytest.mark.parametrize("duration", [faults.least_duration(), 40.0, 600.0])
def test_the_plan_has_every_fault_one_at_a_time_within_the_load(duration):
    plan = faults.plan_faults(duration, random.Random(7))
    assert {planned.fault for planned in plan} == set(faults.FAULTS)
    for planned, following in itertools.pairwise(plan):
        assert planned.at + planned.fault.hold + chaos.RECOVERY_SECONDS <= following.at + 1e-9
    assert plan[0].at >= chaos.WARM_UP_SECONDS
    last = plan[-1]
    assert last.at + last.fault.hold + chaos.RECOVERY_SECONDS <= duration - chaos.COOL_DOWN_SECONDS + 1e-9
    assert plan == faults.plan_faults(duration, random.Random(7))


def test_a_process_is_said_to_die_of_the_last_exception_it_printed():
    log = (
        '{"level": "INFO", "message": "worker consuming"}\n'
        "Traceback (most recent call last):\n"
        f'  File "{chaos.ROOT}/worker/consumer.py", line 156, in _process\n'
        "    channel.basic_ack(delivery_tag=batch[-1].tag, multiple=True)\n"
        '  File "/x/.venv/lib/python3.11/site-packages/pika/adapters/blocking_connection.py", line 551\n'
        "pika.exceptions.ConnectionClosedByBroker: (320, 'CONNECTION_FORCED - chaos')\n"
    )
    assert processes.last_error(log) == (
        "pika.exceptions.ConnectionClosedByBroker: (320, 'CONNECTION_FORCED - chaos') "
        "(at worker/consumer.py:156 in _process)"
    )
