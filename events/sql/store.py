"""The event store on SQL: append to a stream with an expected version, read a stream, read all.

`events.ports.EventStore` is the interface the service and the worker depend on;
`PostgresEventStore` is the production implementation. An append writes, in one transaction,
the events, their outbox rows (for the relay), their pending-projection rows (for
read-your-writes) and any cross-stream reservations, so either all of it exists or none.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
from sqlalchemy import delete, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from events import codec
from events.model import Event, Metadata, RecordedEvent, StoredEvent, utcnow, uuid7
from events.ports import ConcurrencyConflict, Reservation, ReservationRecord, ReservationTaken
from events.sql.engine import autocommit, driver_connection
from events.sql.tables import (
    OUTBOX_CHANNEL,
    RELAY_IDLE_LOCK_ID,
    events_table,
    outbox_table,
    projection_pending_table,
    reservations_table,
    subject_keys_table,
)
from events.sql.vault import SqlVault

# The whole append is ONE statement (in psycopg's parameter style), run outside an explicit
# transaction: PostgreSQL makes a statement atomic on its own, so the reservations, the events,
# their outbox and pending rows all land or none does, in a single round trip (no BEGIN and
# COMMIT). A duplicate reservation or stream version aborts it with the violated constraint's
# name. pg_notify wakes the relay at commit, if it is idle (see `events.sql.tables.RELAY_IDLE_LOCK_ID`).
#
# The statement has only the parts an append needs (`_append_sql`): most appends are one event
# and no reservation, and for them a VALUES row and no reservations CTE cost the server about
# 130 us less than unpacking JSON documents (measured: a third of what the append costs it).
_RESERVED_CTE = """reserved AS (
        INSERT INTO reservations (scope, key, stream_id, payload, subject_id)
        SELECT r.scope, r.key, %(stream_id)s, r.payload, r.subject_id
        FROM jsonb_to_recordset(CAST(%(reservations)s AS jsonb))
             AS r(scope text, key text, payload jsonb, subject_id uuid)
    ), """
_ONE_EVENT_CTE = """new AS (
        INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, data, metadata)
        VALUES (CAST(%(id)s AS uuid), %(stream_id)s, %(version)s, %(type)s, %(schema_version)s,
                CAST(%(data)s AS jsonb), CAST(%(metadata)s AS jsonb))
        RETURNING position, event_id, stream_version, recorded_at
    )"""
_EVENTS_CTE = """new AS (
        INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, data, metadata)
        SELECT e.id, %(stream_id)s, e.version, e.type, e.schema_version, e.data, CAST(%(metadata)s AS jsonb)
        FROM jsonb_to_recordset(CAST(%(events)s AS jsonb))
             AS e(id uuid, version int, type text, schema_version int, data jsonb)
        ORDER BY e.version
        RETURNING position, event_id, stream_version, recorded_at
    )"""
_OUTBOX_AND_PENDING_CTES = """, outboxed AS (
        INSERT INTO outbox (position) SELECT position FROM new
    ), pending AS (
        INSERT INTO projection_pending (position, org_id, stream_id)
        SELECT position, %(org_id)s, %(stream_id)s FROM new
    )"""
#: An append that also writes the data subjects its events make (issued keys: `events.sql.vault`).
_SUBJECTS_CTE = """, subjects AS (
        INSERT INTO subject_keys (subject_id, org_id, lookup, master_key_id, wrapped_key)
        SELECT s.subject_id, s.org_id, decode(s.lookup, 'hex'), s.master_key_id, decode(s.wrapped_key, 'hex')
        FROM jsonb_to_recordset(CAST(%(subjects)s AS jsonb))
             AS s(subject_id uuid, org_id text, lookup text, master_key_id text, wrapped_key text)
    )"""
#: An append that also destroys data subjects' keys (`events.personal`): its `CandidateErased`
#: events and the erasure land together or not at all.
_ERASING_CTE = """, erased AS (
        DELETE FROM subject_keys WHERE subject_id = ANY(CAST(%(erasing)s AS uuid[]))
    )"""
_RECORDED_SELECT = """
    SELECT position, event_id, stream_version, recorded_at,
           CASE WHEN pg_try_advisory_xact_lock_shared(%(relay_idle_lock)s) THEN NULL
                ELSE pg_notify(%(channel)s, '') END AS notified
    FROM new ORDER BY stream_version
    """


@functools.cache
def _append_sql(one_event: bool, reserving: bool, sealing: bool, erasing: bool) -> str:
    """The append statement with the parts this append needs, and no others."""
    return "".join(
        [
            "WITH ",
            _RESERVED_CTE if reserving else "",
            _ONE_EVENT_CTE if one_event else _EVENTS_CTE,
            _OUTBOX_AND_PENDING_CTES,
            _SUBJECTS_CTE if sealing else "",
            _ERASING_CTE if erasing else "",
            _RECORDED_SELECT,
        ]
    )


#: "Key (scope, key)=(candidate_key, PST-ABCD-EFGH) already exists."
_TAKEN = re.compile(r"=\((?P<scope>[^,]*), (?P<key>.*)\) already exists")


class SqlEventStore:
    """The event store on any SQLAlchemy database (SQLite in `assessments dev`): an append is
    one transaction of plain inserts. `PostgresEventStore` does the same in one statement."""

    def __init__(self, engine: Engine, personal: SqlVault | None = None) -> None:
        self.engine = engine
        #: Seals events' personal fields (`events.personal`); without it they are kept clear.
        self.personal = personal
        #: For single statements (every read; the whole append on PostgreSQL): no BEGIN and
        #: ROLLBACK round trips around them, and on SQLite no write lock for a read.
        self.autocommit = autocommit(engine)
        #: Called after each successful append (the in-process relay's wake-up).
        self.on_append: list[Callable[[], None]] = []

    def append(
        self,
        stream_id: uuid.UUID,
        expected_version: int,
        events: Sequence[Event],
        metadata: Metadata,
        reservations: Sequence[Reservation] = (),
        erasing: Sequence[uuid.UUID] = (),
    ) -> list[RecordedEvent]:
        if not events:
            return []
        meta = metadata.as_dict()
        now = utcnow()
        step = "reservations"
        try:
            with self.engine.begin() as conn:
                if reservations:
                    conn.execute(
                        reservations_table.insert(),
                        [
                            {
                                "scope": r.scope,
                                "key": r.key,
                                "stream_id": stream_id,
                                "payload": r.payload,
                                "subject_id": r.subject_id,
                            }
                            for r in reservations
                        ],
                    )
                step = "events"
                subjects: list[dict[str, Any]] = []
                recorded = [
                    self._insert(conn, stream_id, expected_version + n, event, meta, now, subjects)
                    for n, event in enumerate(events, start=1)
                ]
                if subjects:
                    conn.execute(subject_keys_table.insert(), subjects)
                if erasing:
                    conn.execute(
                        delete(subject_keys_table).where(subject_keys_table.c.subject_id.in_(erasing))
                    )
                positions = [{"position": r.position} for r in recorded]
                conn.execute(outbox_table.insert(), positions)
                conn.execute(
                    projection_pending_table.insert(),
                    [
                        {**p, "org_id": metadata.org_id, "stream_id": stream_id, "recorded_at": now}
                        for p in positions
                    ],
                )
        except IntegrityError as error:
            if step == "events":
                raise ConcurrencyConflict(f"{stream_id} is past version {expected_version}") from error
            raise self._taken(reservations) from error
        for listener in self.on_append:
            listener()
        return recorded

    def _payload(self, event_id: uuid.UUID, event: Event, subjects: list[dict[str, Any]]) -> dict[str, Any]:
        """The event's stored payload, its personal fields sealed; the data subject it makes
        goes into `subjects`, for the same transaction to write."""
        data = codec.encode(event)
        if self.personal is None:
            return data
        sealed = self.personal.seal(event_id, event, data)
        if sealed.subject is not None:
            subjects.append(sealed.subject)
        return sealed.data

    def _insert(
        self, conn: Connection, stream_id, version: int, event: Event, meta: dict, now, subjects: list
    ) -> RecordedEvent:
        event_id = uuid7()
        position = conn.execute(
            events_table.insert()
            .values(
                event_id=event_id,
                stream_id=stream_id,
                stream_version=version,
                type=event.type_name,
                schema_version=event.schema_version,
                data=self._payload(event_id, event, subjects),
                metadata=meta,
                recorded_at=now,
            )
            .returning(events_table.c.position)
        ).scalar_one()
        return RecordedEvent(event_id, stream_id, version, position, now, event, meta)

    def _taken(self, reservations: Sequence[Reservation]) -> ReservationTaken:
        for r in reservations:
            if self.reservation(r.scope, r.key) is not None:
                return ReservationTaken(r.scope, r.key)
        seen = set()
        for r in reservations:  # the same value twice in one append
            if (r.scope, r.key) in seen:
                return ReservationTaken(r.scope, r.key)
            seen.add((r.scope, r.key))
        return ReservationTaken(reservations[0].scope, reservations[0].key)

    def load(self, stream_id: uuid.UUID, after_version: int = 0) -> list[RecordedEvent]:
        query = (
            select(events_table)
            .where(events_table.c.stream_id == stream_id)
            .where(events_table.c.stream_version > after_version)
            .order_by(events_table.c.stream_version)
        )
        with self.autocommit.connect() as conn:
            return [to_recorded(row) for row in conn.execute(query)]

    def at_positions(self, positions: Sequence[int]) -> list[RecordedEvent]:
        """These events as stored: the worker's source of what messages do not carry (personal
        fields, sealed: `events.personal`)."""
        query = select(events_table).where(events_table.c.position.in_(list(positions)))
        with self.autocommit.connect() as conn:
            return [to_recorded(row) for row in conn.execute(query)]

    def read_all(self, after_position: int = 0, batch_size: int = 1000) -> Iterator[RecordedEvent]:
        """Every event after a global position, in position order, in batches."""
        while True:
            query = (
                select(events_table)
                .where(events_table.c.position > after_position)
                .order_by(events_table.c.position)
                .limit(batch_size)
            )
            with self.autocommit.connect() as conn:
                batch = [to_recorded(row) for row in conn.execute(query)]
            yield from batch
            if len(batch) < batch_size:
                return
            after_position = batch[-1].position

    def reservation(self, scope: str, key: str) -> ReservationRecord | None:
        query = select(reservations_table).where(
            reservations_table.c.scope == scope, reservations_table.c.key == key
        )
        with self.autocommit.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return ReservationRecord(row.scope, row.key, row.stream_id, row.payload, row.subject_id)

    def reserved_values(self, scope: str, subject_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """The reserved values of these subjects (a candidate key's string, by key id)."""
        if not subject_ids:
            return {}
        query = select(reservations_table.c.subject_id, reservations_table.c.key).where(
            reservations_table.c.scope == scope, reservations_table.c.subject_id.in_(subject_ids)
        )
        with self.autocommit.connect() as conn:
            return {subject_id: value for subject_id, value in conn.execute(query)}


class PostgresEventStore(SqlEventStore):
    def append(
        self,
        stream_id: uuid.UUID,
        expected_version: int,
        events: Sequence[Event],
        metadata: Metadata,
        reservations: Sequence[Reservation] = (),
        erasing: Sequence[uuid.UUID] = (),
    ) -> list[RecordedEvent]:
        """Append after `expected_version`; the unique (stream, version) index turns a lost
        race into `ConcurrencyConflict`, never into an overwrite. Callers pass the version
        they loaded, so the stream is never behind it."""
        if not events:
            return []
        meta = metadata.as_dict()
        new_events, subjects = [], []
        for n, event in enumerate(events, start=1):
            event_id = uuid7()
            new_events.append(
                {
                    "id": str(event_id),
                    "version": expected_version + n,
                    "type": event.type_name,
                    "schema_version": event.schema_version,
                    "data": self._payload(event_id, event, subjects),
                }
            )
        sql, params = _append_statement(
            stream_id, metadata.org_id, meta, new_events, reservations, subjects, erasing
        )
        try:
            # Static SQL on the bare driver connection: nothing for SQLAlchemy to do, and
            # psycopg prepares the statement after a few uses.
            with driver_connection(self.engine) as conn:
                rows = conn.execute(sql, params).fetchall()
        except IntegrityError as error:
            raise _translate(error, stream_id, expected_version, reservations) from error
        return [
            RecordedEvent(
                event_id=event_id,
                stream_id=stream_id,
                stream_version=version,
                position=position,
                recorded_at=recorded_at,
                event=event,
                metadata=meta,
            )
            for (position, event_id, version, recorded_at, _), event in zip(rows, events, strict=True)
        ]


def _append_statement(
    stream_id: uuid.UUID,
    org_id: str,
    meta: dict[str, Any],
    new_events: list[dict[str, Any]],
    reservations: Sequence[Reservation],
    subjects: list[dict[str, Any]],
    erasing: Sequence[uuid.UUID],
) -> tuple[str, dict[str, Any]]:
    """The append's SQL and the parameters of the parts it has. Several rows travel as one JSON
    document each (events, reservations, subjects): far cheaper for the driver to send than an
    array per column."""
    params = {
        "stream_id": stream_id,
        "org_id": org_id,
        "metadata": _json(meta),
        "channel": OUTBOX_CHANNEL,
        "relay_idle_lock": RELAY_IDLE_LOCK_ID,
    }
    if len(new_events) == 1:
        params.update(new_events[0], data=_json(new_events[0]["data"]))
    else:
        params["events"] = _json(new_events)
    if reservations:
        params["reservations"] = _json([_reservation_json(r) for r in reservations])
    if subjects:
        params["subjects"] = _json([_as_json(subject) for subject in subjects])
    if erasing:
        params["erasing"] = list(erasing)
    sql = _append_sql(len(new_events) == 1, bool(reservations), bool(subjects), bool(erasing))
    return sql, params


def _reservation_json(reservation: Reservation) -> dict[str, Any]:
    subject_id = reservation.subject_id
    return {
        "scope": reservation.scope,
        "key": reservation.key,
        "payload": reservation.payload,
        "subject_id": None if subject_id is None else str(subject_id),
    }


def _as_json(subject: dict[str, Any]) -> dict[str, Any]:
    """A subject row as `_SUBJECTS_CTE` reads it: ids as text, bytes as hex."""
    return {
        key: value.hex()
        if isinstance(value, bytes)
        else str(value)
        if isinstance(value, uuid.UUID)
        else value
        for key, value in subject.items()
    }


def _json(document: Any) -> str:
    """A parameter's JSON text, by orjson (several times faster than `json.dumps`)."""
    return orjson.dumps(document).decode()


def to_recorded(row: Any) -> RecordedEvent:
    """A row of the events table, decoded."""
    return codec.recorded(
        StoredEvent(
            row.position,
            row.event_id,
            row.stream_id,
            row.stream_version,
            row.type,
            row.schema_version,
            row.data,
            row.metadata,
            row.recorded_at,
        )
    )


def _translate(
    error: IntegrityError,
    stream_id: uuid.UUID,
    expected_version: int,
    reservations: Sequence[Reservation],
) -> Exception:
    diag = getattr(error.orig, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    if constraint == "events_stream_version_key":
        return ConcurrencyConflict(f"{stream_id} is past version {expected_version}")
    if constraint == "reservations_pkey":
        taken = _TAKEN.search(getattr(diag, "message_detail", None) or "")
        if taken:
            return ReservationTaken(taken["scope"], taken["key"])
        return ReservationTaken(reservations[0].scope, reservations[0].key)
    return error
