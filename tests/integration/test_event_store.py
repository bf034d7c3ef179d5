"""The event store's and the outbox's contract, run against every implementation: PostgreSQL
(production), SQLite (`assessments dev`) and memory (the service's unit tests). Appends are
atomic, optimistic, and events are facts."""

from __future__ import annotations

import copy
import threading
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from cli.dev import create_schema
from events import codec
from events.keys import key_hint
from events.memory.store import InMemoryEventStore, InMemoryOutbox
from events.model import (
    AssessmentCreated,
    AssessmentDeleted,
    CandidateKeyIssued,
    CandidateKeyRevoked,
    utcnow,
    uuid7,
)
from events.ports import ConcurrencyConflict, Outbox, Reservation, ReservationTaken
from events.sql.dialect import dialect_of
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


@pytest.fixture(params=["postgresql", "sqlite", "memory"])
def store(request, tmp_path):
    if request.param == "memory":
        yield InMemoryEventStore()
        return
    if request.param == "postgresql":
        yield request.getfixturevalue("system").store
        return
    engine = make_engine(f"sqlite:///{tmp_path / 'events.sqlite3'}")
    create_schema(engine)
    yield SqlEventStore(engine)
    engine.dispose()


@pytest.fixture
def outbox(store) -> Outbox:
    if isinstance(store, InMemoryEventStore):
        return InMemoryOutbox(store)
    return dialect_of(store.engine).outbox(store.engine)


# --- what each backend holds beside the events: the SQL tables, or the memory store's rows ----


def in_memory(store) -> bool:
    return isinstance(store, InMemoryEventStore)


def rows_of(store, stream_id: uuid.UUID) -> dict[str, int]:
    """How many events, outbox rows and pending rows a stream has."""
    if not in_memory(store):
        return stream_rows(store.engine, stream_id)
    return {
        "events": len(store.load(stream_id)),
        "outbox": len(outboxed(store, [r.position for r in store.load(stream_id)])),
        "pending": len([row for row in store.pending_rows() if row.stream_id == stream_id]),
    }


def outboxed(store, positions: list[int]) -> list[int]:
    """Which of these positions have an outbox row, in order."""
    if in_memory(store):
        return [e.position for e in InMemoryOutbox(store).unpublished(10**6) if e.position in positions]
    with store.engine.connect() as conn:
        return conn.scalars(
            select(outbox_table.c.position)
            .where(outbox_table.c.position.in_(positions))
            .order_by(outbox_table.c.position)
        ).all()


def waiting(store, stream_id: uuid.UUID, org_id: str) -> list[int]:
    """The positions of a stream's pending rows for an organisation, in order."""
    if in_memory(store):
        return [r.position for r in store.pending_rows() if (r.stream_id, r.org_id) == (stream_id, org_id)]
    pending = projection_pending_table.c
    with store.engine.connect() as conn:
        return conn.scalars(
            select(pending.position)
            .where(pending.stream_id == stream_id, pending.org_id == org_id)
            .order_by(pending.position)
        ).all()


# --- the event store ----------------------------------------------------------------------------


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
    before = rows_of(store, stream)

    with pytest.raises(ConcurrencyConflict):
        store.append(stream, 1, [deleted(stream, org_id)], metadata(org_id))

    assert rows_of(store, stream) == before
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
    assert rows_of(store, stream) == {"events": 2, "outbox": 2, "pending": 2}


def test_each_appended_event_has_exactly_one_outbox_and_one_pending_row(store, org_id):
    stream = uuid7()
    recorded = store.append(
        stream,
        0,
        [created(stream, org_id), issued(stream, org_id, fresh_key()), issued(stream, org_id, fresh_key())],
        metadata(org_id),
    )
    positions = [r.position for r in recorded]

    assert outboxed(store, positions) == positions
    assert waiting(store, stream, org_id) == positions


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
    assert rows_of(store, second) == {"events": 1, "outbox": 1, "pending": 1}
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
    assert rows_of(store, stream) == {"events": 2, "outbox": 2, "pending": 2}


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
    if in_memory(store):
        pytest.skip("no SQL to refuse: test_the_memory_store_has_no_way_to_change_or_remove_an_event")
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


def test_the_memory_store_has_no_way_to_change_or_remove_an_event(org_id):
    """The memory store's equivalent of the triggers above: it offers appends and reads, and
    what a read hands out is a copy (see the next test)."""
    store = InMemoryEventStore()
    stream = uuid7()
    store.append(stream, 0, [created(stream, org_id)], metadata(org_id))
    before = store.load(stream)

    offered = {name for name in dir(store) if not name.startswith("_")}

    assert offered == {
        "append",
        "load",
        "at_positions",
        "read_all",
        "reservation",
        "reserved_values",
        "pending_rows",
    }
    assert store.load(stream) == before


def test_what_a_reader_is_handed_is_a_copy_that_cannot_change_the_store(store, outbox, org_id):
    stream, key = uuid7(), fresh_key()
    store.append(stream, 0, [created(stream, org_id)], metadata(org_id))
    claim = Reservation("idempotency", key, {"fingerprint": "abc"})
    store.append(stream, 1, [issued(stream, org_id, key)], metadata(org_id), [claim])
    before, reserved, unpublished = copy.deepcopy(
        (store.load(stream), store.reservation("idempotency", key), outbox.unpublished(10))
    )

    for handed in (
        store.load(stream),
        list(store.read_all()),
        store.append(stream, 2, [deleted(stream, org_id)], metadata(org_id)),
    ):
        handed[0].metadata["orgId"] = "someone else"
        handed.clear()
    claim.payload["fingerprint"] = "changed by its caller"
    store.reservation("idempotency", key).payload["fingerprint"] = "forged"
    for stored in outbox.unpublished(10):
        stored.data.clear()
        stored.metadata.clear()

    assert store.load(stream)[:2] == before
    assert [r.metadata["orgId"] for r in store.load(stream)] == [org_id] * 3
    assert store.reservation("idempotency", key) == reserved
    assert outbox.unpublished(10)[:2] == unpublished


def test_of_two_concurrent_appends_claiming_the_same_value_exactly_one_wins(store, org_id):
    streams, key = [uuid7(), uuid7()], fresh_key()
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def claim(stream: uuid.UUID) -> None:
        barrier.wait()
        try:
            store.append(
                stream, 0, [created(stream, org_id)], metadata(org_id), [Reservation(KEY_SCOPE, key)]
            )
            outcomes.append("won")
        except ReservationTaken:
            outcomes.append("taken")

    threads = [threading.Thread(target=claim, args=(stream,)) for stream in streams]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert sorted(outcomes) == ["taken", "won"]
    winner = store.reservation(KEY_SCOPE, key).stream_id
    assert [len(store.load(stream)) for stream in streams] == [int(stream == winner) for stream in streams]


def test_the_same_value_claimed_twice_in_one_append_refuses_it(store, org_id):
    stream, key = uuid7(), fresh_key()

    with pytest.raises(ReservationTaken) as taken:
        store.append(
            stream,
            0,
            [created(stream, org_id)],
            metadata(org_id),
            [Reservation(KEY_SCOPE, key), Reservation(KEY_SCOPE, key)],
        )

    assert (taken.value.scope, taken.value.key) == (KEY_SCOPE, key)
    assert store.reservation(KEY_SCOPE, key) is None
    assert store.load(stream) == []


def test_an_append_of_no_events_stores_nothing_and_claims_nothing(store, org_id):
    stream, key = uuid7(), fresh_key()

    assert store.append(stream, 0, [], metadata(org_id), [Reservation(KEY_SCOPE, key)]) == []

    assert store.load(stream) == []
    assert store.reservation(KEY_SCOPE, key) is None


# --- the outbox ---------------------------------------------------------------------------------


def append_to_streams(store, org_id: str, count: int) -> list:
    """`count` creations, each in a stream of its own, then a deletion of the first: events
    of several streams, interleaved."""
    streams = [uuid7() for _ in range(count)]
    recorded = [store.append(s, 0, [created(s, org_id)], metadata(org_id))[0] for s in streams]
    return recorded + store.append(streams[0], 1, [deleted(streams[0], org_id)], metadata(org_id))


def test_the_outbox_hands_out_unpublished_events_oldest_first_as_stored(store, outbox, org_id):
    recorded = append_to_streams(store, org_id, 3)

    unpublished = outbox.unpublished(3)

    assert [e.position for e in unpublished] == [r.position for r in recorded[:3]]
    assert [(e.event_id, e.stream_id, e.stream_version) for e in unpublished] == [
        (r.event_id, r.stream_id, r.stream_version) for r in recorded[:3]
    ]
    first = unpublished[0]
    assert (first.type_name, first.schema_version) == ("AssessmentCreated", 1)
    assert first.data == codec.encode(recorded[0].event)
    assert first.metadata == recorded[0].metadata
    assert outbox.backlog() == 4
    assert outbox.unpublished(0) == []


def test_published_events_leave_the_outbox_and_stay_in_the_store(store, outbox, org_id):
    recorded = append_to_streams(store, org_id, 3)
    positions = [r.position for r in recorded]

    outbox.mark_published([positions[0], positions[2]])
    outbox.mark_published([])
    outbox.mark_published([positions[0]])  # again: a relay that crashed before it knew

    assert [e.position for e in outbox.unpublished(10)] == [positions[1], positions[3]]
    assert outbox.backlog() == 2
    assert [r.event_id for r in store.read_all()] == [r.event_id for r in recorded]


def test_advancing_removes_the_published_rows_and_reads_the_next_ones(store, outbox, org_id):
    recorded = append_to_streams(store, org_id, 4)
    ids = [r.event_id for r in recorded]
    first = outbox.advance([], 2)

    second = outbox.advance([e.position for e in first], 2)

    assert [e.event_id for e in first] == ids[:2]
    assert [e.event_id for e in second] == ids[2:4]
    assert outbox.advance([e.position for e in second], 0) == []
    assert [e.event_id for e in outbox.unpublished(10)] == ids[4:]
    assert outbox.backlog() == 1
