"""The worker's projections are idempotent and order-tolerant: redelivery, lost messages,
reordering and several workers at once all end in the store's state."""

from __future__ import annotations

import random

import psycopg
import pytest
from psycopg import pq
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from events.sql.engine import libpq_url
from projections import default_projections
from projections.projector import apply_batch
from projections.queries import wait_until_projected
from tests.integration.helpers import (
    assert_projected_exactly,
    assessment_versions,
    candidates,
    create,
    key_versions,
    metadata,
    pending_count,
    rows,
    scalar,
    shuffled_chunks,
    stream_versions,
)
from tests.support.wait import wait_for
from worker.batches import is_transient

PROJECTION_TABLES = ("assessments_view", "candidate_keys_view", "candidate_keys_versions")


def snapshot(engine) -> dict[str, list]:
    return {
        table: [tuple(row) for row in rows(engine, f"SELECT * FROM {table} ORDER BY 1")]
        for table in PROJECTION_TABLES
    }


def forget_projections(engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {', '.join(PROJECTION_TABLES)}")


def write_history(service, org_id: str, streams: int, rng: random.Random) -> None:
    """Assessments with keys, revocations and deletions (their cascade included), so every
    kind of event is in the store before anything is projected."""
    for _ in range(streams):
        stream = create(service, org_id).stream_id
        for _ in range(rng.randint(1, 3)):
            service.issue_keys(org_id, stream, candidates(rng.randint(1, 3)), metadata(org_id))
        if rng.random() < 0.5:
            key_id = next(iter(service.load(stream).keys))
            service.revoke_key(org_id, stream, key_id, metadata(org_id))
        if rng.random() < 0.4:
            service.delete(org_id, stream, metadata(org_id))
            service.cascade_deletion(stream, metadata(org_id))


def wait_until_caught_up(engine, timeout: float = 15.0) -> None:
    expected = stream_versions(engine)
    wait_for(
        lambda: assessment_versions(engine) == expected and key_versions(engine) == expected,
        timeout,
        "projections at every stream's last version",
    )


# --- driving the handler directly ---------------------------------------------------------


def test_an_event_handled_twice_is_applied_once(system, service, handler, org_id):
    first = create(service, org_id)
    keys = service.issue_keys(org_id, first.stream_id, candidates(3), metadata(org_id))
    handler.handle([first, *keys])
    projected = snapshot(system.engine)

    handler.handle([first, *keys])

    assert handler.totals.duplicates == 4
    assert handler.totals.applied == 4
    assert snapshot(system.engine) == projected
    assert assessment_versions(system.engine) == {first.stream_id: 4}
    assert scalar(system.engine, "SELECT count(*) FROM candidate_keys_view") == 3


def test_a_deletion_whose_creation_was_lost_fills_the_gap_from_the_store(system, service, handler, org_id):
    first = create(service, org_id)
    (deletion,) = service.delete(org_id, first.stream_id, metadata(org_id))

    handler.handle([deletion])

    assert handler.totals.gaps_filled == 1
    (row,) = rows(system.engine, "SELECT version, deleted_at, title FROM assessments_view")
    assert row.version == 2
    assert row.deleted_at == deletion.event.deleted_at
    assert row.title == first.event.title
    assert pending_count(system.engine) == 0


def test_a_late_creation_after_its_deletion_does_not_resurrect_the_assessment(
    system, service, handler, org_id
):
    first = create(service, org_id)
    (deletion,) = service.delete(org_id, first.stream_id, metadata(org_id))
    handler.handle([deletion])

    handler.handle([first])

    assert handler.totals.duplicates == 1
    assert rows(system.engine, "SELECT version, deleted_at IS NOT NULL AS deleted FROM assessments_view") == [
        (2, True)
    ]


def test_shuffled_batches_end_in_the_same_state_as_in_order(system, service, handler, org_id):
    rng = random.Random(7)
    write_history(service, org_id, streams=25, rng=rng)
    history = list(system.store.read_all())
    handler.handle(history)
    in_order = snapshot(system.engine)
    forget_projections(system.engine)

    for chunk in shuffled_chunks(history, rng, max_size=15):
        handler.handle(chunk)

    assert snapshot(system.engine) == in_order
    assert_projected_exactly(system.engine)


def test_the_sweep_projects_a_stream_whose_messages_never_arrived_sealed_fields_and_all(
    system, service, handler, org_id, monkeypatch
):
    stream = create(service, org_id).stream_id
    (issued,) = service.issue_keys(org_id, stream, candidates(1), metadata(org_id))
    with system.engine.begin() as conn:  # as if its messages had been lost a minute ago
        conn.exec_driver_sql("UPDATE projection_pending SET recorded_at = now() - interval '1 minute'")
    reads: list[list[int]] = []
    read_positions = handler.store.at_positions
    monkeypatch.setattr(handler.store, "at_positions", lambda p: reads.append(p) or read_positions(p))

    assert handler.sweep() == 1

    assert pending_count(system.engine) == 0
    assert reads == []  # the stream it read from the store already holds every field
    stored = handler.store.at_positions([issued.position])[0].event
    (email, name) = rows(
        system.engine,
        "SELECT candidate_email, candidate_name FROM candidate_keys_view WHERE id = :key_id",
        key_id=issued.event.key_id,
    )[0]
    assert (email, name) == (stored.candidate_email, stored.candidate_name)
    assert email and email != "candidate0@example.com"  # sealed, as the store holds it


# --- through RabbitMQ ---------------------------------------------------------------------


def test_a_message_delivered_twice_through_the_broker_is_applied_once(
    system, service, broker, start_worker, org_id
):
    worker = start_worker()
    first = create(service, org_id)
    keys = service.issue_keys(org_id, first.stream_id, candidates(2), metadata(org_id))
    broker.publish_events([first, *keys])
    wait_for(lambda: pending_count(system.engine) == 0, 10, "the events projected")

    broker.publish_events(keys)

    wait_for(lambda: worker.handler.totals.duplicates == 2, 10, "both redeliveries seen")
    assert worker.handler.totals.applied == 3
    assert assessment_versions(system.engine) == {first.stream_id: 3}
    assert scalar(system.engine, "SELECT count(*) FROM candidate_keys_view") == 2


def test_a_deletion_delivered_before_its_lost_creation_is_projected_as_deleted(
    system, service, broker, start_worker, org_id
):
    worker = start_worker()
    first = create(service, org_id)
    (deletion,) = service.delete(org_id, first.stream_id, metadata(org_id))

    broker.publish_event(deletion)

    wait_for(lambda: pending_count(system.engine) == 0, 10, "the deletion projected")
    assert worker.handler.totals.gaps_filled == 1
    assert rows(system.engine, "SELECT version, deleted_at FROM assessments_view") == [
        (2, deletion.event.deleted_at)
    ]
    assert wait_until_projected(system.engine, org_id, timeout=0)


def test_messages_of_many_streams_shuffled_end_in_the_same_state_as_in_order(
    system, service, handler, broker, start_worker, org_id
):
    rng = random.Random(11)
    write_history(service, org_id, streams=25, rng=rng)
    history = list(system.store.read_all())
    handler.handle(history)
    in_order = snapshot(system.engine)
    forget_projections(system.engine)
    start_worker(prefetch=10)

    broker.publish_events(rng.sample(history, len(history)))

    wait_until_caught_up(system.engine)
    assert snapshot(system.engine) == in_order


def test_two_workers_on_one_queue_project_every_stream_exactly(system, service, start_worker, org_id):
    workers = [start_worker(prefetch=25), start_worker(prefetch=25)]
    system.start_relay()

    streams = [create(service, org_id).stream_id for _ in range(100)]
    for stream in streams:
        service.issue_keys(org_id, stream, candidates(4), metadata(org_id))

    assert scalar(system.engine, "SELECT count(*) FROM events") == 500
    wait_for(lambda: pending_count(system.engine) == 0, 20, "all 500 events projected")
    assert_projected_exactly(system.engine)
    assert set(assessment_versions(system.engine).values()) == {5}
    assert all(worker.handler.totals.applied > 0 for worker in workers), "both workers took a share"


def test_a_session_lost_during_a_batch_is_a_transient_error_not_a_poison_batch(
    system, service, handler, org_id
):
    """The batch's statements run in psycopg pipelines; a lost session must still come out as
    SQLAlchemy's OperationalError, which the consumer retries instead of dead-lettering."""
    recorded = [create(service, org_id)]
    handler.handle(recorded)  # the handler's pooled session now exists
    # Killed after the checkout's own check for a dead session: as if it died mid-batch.
    event.listen(system.engine, "checkout", terminate_once(system.engine))

    with pytest.raises(OperationalError) as raised:
        handler.handle(recorded)
    assert is_transient(raised.value)


def terminate_once(engine):
    """A checkout listener that terminates the session it hands out, the first time only."""
    done = []

    def terminate(dbapi_connection, _record, _proxy) -> None:
        if not done:
            done.append(dbapi_connection.info.backend_pid)
            with psycopg.connect(libpq_url(engine), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (done[0],))

    return terminate


def test_a_batch_commits_with_its_writes_and_leaves_nothing_for_the_callers_commit(system, service, org_id):
    created = create(service, org_id)
    with system.engine.begin() as conn:
        apply_batch(conn, default_projections(), [created], service.store.load, lock=True, commit=True)
        driver = conn.connection.driver_connection
        assert driver.info.transaction_status == pq.TransactionStatus.IDLE
        # Visible to another session before the caller's own commit, which has nothing to do.
        assert assessment_versions(system.engine) == {created.stream_id: 1}
