"""The event store's contract, run against both implementations: PostgreSQL (production) and
SQLite (`assessments dev`). Appends are atomic, optimistic, and events are facts."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from cli.dev import create_schema
from events.keys import key_hint
from events.model import (
    AssessmentCreated,
    AssessmentDeleted,
    CandidateKeyIssued,
    CandidateKeyRevoked,
    utcnow,
    uuid7,
)
from events.ports import ConcurrencyConflict, Reservation, ReservationTaken
from events.sql.engine import make_engine
from events.sql.store import SqlEventStore
from events.sql.tables import outbox_table, projection_pending_table
from tests.integration.helpers import metadata, stream_rows

KEY_SCOPE = "candidate_key"


def created(stream_id: uuid.UUID, org_id: str, title: str = "Backend API") -> AssessmentCreated:
    return AssessmentCreated(
        assessment_id=stream_id,
        org_id=org_id,
        title=title,
        role="Backend engineer",
        task_brief="Build the thing",
        repo_url="https://example.com/repo.git",
        time_limit_minutes=90,
        expires_in_days=7,
        issue_id=None,
        rubric_id=uuid.uuid4(),
        created_at=utcnow(),
    )


def issued(stream_id: uuid.UUID, org_id: str, key: str) -> CandidateKeyIssued:
    now = utcnow()
    return CandidateKeyIssued(
        key_id=uuid7(),
        assessment_id=stream_id,
        org_id=org_id,
        key_hint=key_hint(key),
        candidate_email="ada@example.com",
        candidate_name="Ada",
        org_name="Acme",
        expires_at=now + timedelta(days=7),
        issued_at=now,
    )


def deleted(stream_id: uuid.UUID, org_id: str) -> AssessmentDeleted:
    return AssessmentDeleted(assessment_id=stream_id, org_id=org_id, deleted_at=utcnow())


def fresh_key() -> str:
    return f"PST-{uuid.uuid4().hex[:4].upper()}-{uuid.uuid4().hex[:4].upper()}"


@pytest.fixture(params=["postgresql", "sqlite"])
def store(request, tmp_path):
    if request.param == "postgresql":
        yield request.getfixturevalue("system").store
        return
    engine = make_engine(f"sqlite:///{tmp_path / 'events.sqlite3'}")
    create_schema(engine)
    yield SqlEventStore(engine)
    engine.dispose()


def test_appended_events_load_back_as_they_were_written(store, org_id):
    stream = uuid7()
    key_issued = issued(stream, org_id, fresh_key())
    written = [created(stream, org_id), key_issued]
    meta = metadata(org_id)

    recorded = store.append(stream, 0, written, meta)
    later = [
        CandidateKeyRevoked(key_issued.key_id, stream, org_id, "revoked", utcnow()),
        deleted(stream, org_id),
    ]
    recorded += store.append(stream, 2, later, meta)
    loaded = store.load(stream)

    assert [r.event for r in loaded] == written + later
    assert [r.type_name for r in loaded] == [
        "AssessmentCreated",
        "CandidateKeyIssued",
        "CandidateKeyRevoked",
        "AssessmentDeleted",
    ]
    assert [r.stream_version for r in loaded] == [1, 2, 3, 4]
    assert [r.event_id for r in loaded] == [r.event_id for r in recorded]
    assert [r.position for r in loaded] == [r.position for r in recorded]
    assert [r.position for r in loaded] == sorted({r.position for r in loaded})
    assert all(r.metadata["orgId"] == org_id for r in loaded)
    assert loaded[0].metadata["correlationId"] == meta.correlation_id


def test_load_after_a_version_returns_only_the_newer_events(store, org_id):
    stream = uuid7()
    store.append(stream, 0, [created(stream, org_id), issued(stream, org_id, fresh_key())], metadata(org_id))
    store.append(stream, 2, [deleted(stream, org_id)], metadata(org_id))

    assert [r.stream_version for r in store.load(stream, after_version=1)] == [2, 3]
    assert store.load(uuid7()) == []


def test_append_with_a_stale_expected_version_conflicts_and_stores_nothing(store, org_id):
    stream = uuid7()
    store.append(stream, 0, [created(stream, org_id)], metadata(org_id))
    store.append(stream, 1, [issued(stream, org_id, fresh_key())], metadata(org_id))
    before = stream_rows(store.engine, stream)

    with pytest.raises(ConcurrencyConflict):
        store.append(stream, 1, [deleted(stream, org_id)], metadata(org_id))

    assert stream_rows(store.engine, stream) == before
    assert [r.type_name for r in store.load(stream)] == ["AssessmentCreated", "CandidateKeyIssued"]


def test_of_two_concurrent_appends_at_the_same_version_exactly_one_wins(store, org_id):
    stream = uuid7()
    store.append(stream, 0, [created(stream, org_id)], metadata(org_id))
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def delete_at_version_one() -> None:
        barrier.wait()
        try:
            store.append(stream, 1, [deleted(stream, org_id)], metadata(org_id))
            outcomes.append("won")
        except ConcurrencyConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=delete_at_version_one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert sorted(outcomes) == ["conflict", "won"]
    assert [r.type_name for r in store.load(stream)] == ["AssessmentCreated", "AssessmentDeleted"]
    assert stream_rows(store.engine, stream) == {"events": 2, "outbox": 2, "pending": 2}


def test_each_appended_event_has_exactly_one_outbox_and_one_pending_row(store, org_id):
    stream = uuid7()
    recorded = store.append(
        stream,
        0,
        [created(stream, org_id), issued(stream, org_id, fresh_key()), issued(stream, org_id, fresh_key())],
        metadata(org_id),
    )
    positions = [r.position for r in recorded]

    pending = projection_pending_table.c
    with store.engine.connect() as conn:
        outboxed = conn.scalars(
            select(outbox_table.c.position)
            .where(outbox_table.c.position.in_(positions))
            .order_by(outbox_table.c.position)
        ).all()
        waiting = conn.scalars(
            select(pending.position)
            .where(pending.stream_id == stream, pending.org_id == org_id)
            .order_by(pending.position)
        ).all()
    assert outboxed == positions
    assert waiting == positions


def test_a_taken_reservation_refuses_the_append_and_stores_nothing(store, org_id):
    key = fresh_key()
    first, second = uuid7(), uuid7()
    store.append(first, 0, [created(first, org_id)], metadata(org_id))
    store.append(first, 1, [issued(first, org_id, key)], metadata(org_id), [Reservation(KEY_SCOPE, key)])
    store.append(second, 0, [created(second, org_id)], metadata(org_id))
    other_key = fresh_key()

    with pytest.raises(ReservationTaken) as taken:
        store.append(
            second,
            1,
            [issued(second, org_id, other_key), issued(second, org_id, key)],
            metadata(org_id),
            [Reservation(KEY_SCOPE, other_key), Reservation(KEY_SCOPE, key)],
        )

    assert (taken.value.scope, taken.value.key) == (KEY_SCOPE, key)
    assert stream_rows(store.engine, second) == {"events": 1, "outbox": 1, "pending": 1}
    assert store.reservation(KEY_SCOPE, key).stream_id == first
    assert store.reservation(KEY_SCOPE, other_key) is None


def test_a_reservation_names_its_subject_and_gives_the_value_back_by_it(store, org_id):
    stream = uuid7()
    store.append(stream, 0, [created(stream, org_id)], metadata(org_id))
    keys = {uuid7(): fresh_key() for _ in range(3)}
    events = [replace(issued(stream, org_id, key), key_id=key_id) for key_id, key in keys.items()]
    claims = [Reservation(KEY_SCOPE, key, subject_id=key_id) for key_id, key in keys.items()]

    store.append(stream, 1, events, metadata(org_id), claims)

    some = list(keys)[:2]
    assert store.reserved_values(KEY_SCOPE, some) == {key_id: keys[key_id] for key_id in some}
    assert store.reserved_values(KEY_SCOPE, [uuid7()]) == {}
    assert store.reserved_values("idempotency", some) == {}
    for key_id, key in keys.items():
        reserved = store.reservation(KEY_SCOPE, key)
        assert (reserved.stream_id, reserved.subject_id) == (stream, key_id)
    assert all(key not in str(store.load(stream)) for key in keys.values())


def test_a_conflicting_append_releases_the_reservations_it_claimed(store, org_id):
    stream = uuid7()
    store.append(stream, 0, [created(stream, org_id)], metadata(org_id))
    store.append(stream, 1, [deleted(stream, org_id)], metadata(org_id))
    key = fresh_key()

    with pytest.raises(ConcurrencyConflict):
        store.append(
            stream, 1, [issued(stream, org_id, key)], metadata(org_id), [Reservation(KEY_SCOPE, key)]
        )

    assert store.reservation(KEY_SCOPE, key) is None
    assert stream_rows(store.engine, stream) == {"events": 2, "outbox": 2, "pending": 2}


def test_read_all_returns_every_event_after_a_position_in_position_order(store, org_id):
    streams = [uuid7() for _ in range(4)]
    for stream in streams:
        store.append(stream, 0, [created(stream, org_id)], metadata(org_id))
    for stream in reversed(streams):
        store.append(stream, 1, [issued(stream, org_id, fresh_key())], metadata(org_id))
    everything = list(store.read_all())
    middle = everything[2].position

    after = list(store.read_all(after_position=middle, batch_size=2))

    assert len(everything) == 8
    assert [r.position for r in everything] == sorted(r.position for r in everything)
    assert [r.event_id for r in after] == [r.event_id for r in everything[3:]]
    assert [r.stream_id for r in after[-4:]] == list(reversed(streams))


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET data = '{}' WHERE stream_id = :s",
        "DELETE FROM events WHERE stream_id = :s",
        "TRUNCATE events CASCADE",
    ],
    ids=["update", "delete", "truncate"],
)
def test_events_are_facts_that_cannot_be_changed_or_removed(store, org_id, statement):
    on_sqlite = store.engine.dialect.name == "sqlite"
    if on_sqlite and statement.startswith("TRUNCATE"):
        pytest.skip("SQLite has no TRUNCATE")
    stream = uuid7()
    store.append(stream, 0, [created(stream, org_id)], metadata(org_id))
    before = store.load(stream)

    with pytest.raises(DBAPIError, match="never updated or deleted"), store.engine.begin() as conn:
        stored_as = stream.hex if on_sqlite else str(stream)  # SQLite keeps UUIDs as hex text
        conn.exec_driver_sql(statement.replace(":s", f"'{stored_as}'"))

    assert store.load(stream) == before
