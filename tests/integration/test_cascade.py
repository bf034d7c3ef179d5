"""The cascade: deleting an assessment revokes each of its keys exactly once, however often
the deletion is delivered, and no key issued in a race with the deletion stays usable."""

from __future__ import annotations

import threading
from collections import Counter

from cli import bootstrap
from events.aggregate import REVOKED_BY_CASCADE, AssessmentNotFound, rebuild
from events.model import CandidateKeyRevoked
from events.ports import ConcurrencyConflict
from tests.integration.helpers import (
    candidates,
    create,
    metadata,
    rows,
    separate_processes,
    wait_until_quiet,
)
from tests.support.wait import wait_for


def revocations(store, stream_id) -> list[CandidateKeyRevoked]:
    return [r.event for r in store.load(stream_id) if isinstance(r.event, CandidateKeyRevoked)]


def assessment_with_keys(service, org_id: str, count: int):
    first = create(service, org_id)
    keys = service.issue_keys(org_id, first.stream_id, candidates(count), metadata(org_id))
    (deletion,) = service.delete(org_id, first.stream_id, metadata(org_id))
    return first.stream_id, {k.event.key_id for k in keys}, deletion


def test_deleting_an_assessment_revokes_each_of_its_50_keys_once(system, service, handler, org_id):
    stream, key_ids, deletion = assessment_with_keys(service, org_id, 50)

    handler.handle([deletion])

    revoked = revocations(system.store, stream)
    assert Counter(e.key_id for e in revoked) == Counter(key_ids)
    assert {e.reason for e in revoked} == {REVOKED_BY_CASCADE}
    assert handler.totals.cascaded == 50
    cascade_metadata = system.store.load(stream)[-1].metadata
    assert cascade_metadata["causationId"] == str(deletion.event_id)
    assert cascade_metadata["orgId"] == org_id


def test_running_the_cascade_again_appends_nothing(system, service, handler, org_id):
    stream, _, deletion = assessment_with_keys(service, org_id, 50)
    handler.handle([deletion])
    version = len(system.store.load(stream))

    handler.cascade([deletion])

    assert len(system.store.load(stream)) == version
    assert len(revocations(system.store, stream)) == 50


def test_a_redelivered_deletion_revokes_no_key_twice(system, service, handler, org_id):
    """A worker killed after the cascade but before its ack gets the deletion again."""
    stream, key_ids, deletion = assessment_with_keys(service, org_id, 50)

    handler.handle([deletion])
    handler.handle([deletion])

    assert Counter(e.key_id for e in revocations(system.store, stream)) == Counter(key_ids)
    assert handler.totals.cascaded == 50


def test_two_workers_cascading_one_deletion_at_once_revoke_each_key_once(system, service, handler, org_id):
    stream, key_ids, deletion = assessment_with_keys(service, org_id, 50)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def cascade() -> None:
        barrier.wait()
        try:
            handler.cascade([deletion])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=cascade) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    assert not errors
    assert Counter(e.key_id for e in revocations(system.store, stream)) == Counter(key_ids)


def test_the_worker_cascades_a_deletion_into_revoked_projected_keys(system, service, org_id):
    system.start_relay()
    system.start_worker()
    stream, key_ids, _ = assessment_with_keys(service, org_id, 50)

    wait_for(lambda: len(revocations(system.store, stream)) == 50, 10, "50 revocations in the stream")
    wait_until_quiet(system.engine)

    assert len(revocations(system.store, stream)) == 50
    projected = rows(
        system.engine,
        "SELECT id, revoke_reason FROM candidate_keys_view "
        "WHERE assessment_id = :a AND revoked_at IS NOT NULL",
        a=stream,
    )
    assert {row.id for row in projected} == key_ids
    assert {row.revoke_reason for row in projected} == {REVOKED_BY_CASCADE}


def test_no_key_issued_in_a_race_with_the_deletion_stays_unrevoked(system, org_id):
    # The issuer and the deleter stand for requests in two API processes: they do not take
    # turns, they race at the database.
    deleter = bootstrap.assessment_service(system.engine, system.store, turns=separate_processes)
    service = bootstrap.assessment_service(system.engine, system.store, turns=separate_processes)
    system.start_relay()
    system.start_worker()
    deleted_streams = []
    for _ in range(20):
        stream = create(service, org_id).stream_id
        barrier = threading.Barrier(2)

        def issue(stream=stream, barrier=barrier) -> None:
            barrier.wait()
            for _ in range(5):
                try:
                    service.issue_keys(org_id, stream, candidates(2), metadata(org_id))
                except AssessmentNotFound:
                    return

        def delete(stream=stream, barrier=barrier) -> None:
            barrier.wait()
            for _ in range(20):  # like a client retrying a 409
                try:
                    deleter.delete(org_id, stream, metadata(org_id))
                    return
                except ConcurrencyConflict:
                    continue

        threads = [threading.Thread(target=issue), threading.Thread(target=delete)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        deleted_streams.append(stream)

    def states() -> list:
        return [rebuild(s, (r.event for r in system.store.load(s))) for s in deleted_streams]

    def every_key_revoked() -> bool:
        return all(all(k.revoked for k in state.keys.values()) for state in states())

    assert all(state.deleted for state in states())

    wait_for(every_key_revoked, 15, "every key of every deleted assessment revoked in the store")
    wait_until_quiet(system.engine)
    issued = sum(len(state.keys) for state in states())
    assert issued > 0, "some keys were issued before their deletion"
    unrevoked = rows(
        system.engine,
        "SELECT id FROM candidate_keys_view WHERE assessment_id = ANY(:a) AND revoked_at IS NULL",
        a=deleted_streams,
    )
    assert unrevoked == []
