"""`assessments candidates seal`: seal the personal data of events stored before sealing existed.

Events are facts and never change, with this one exception, which the law asks for: an event
written in clear (`CandidateKeyIssued` before version 4, `CandidateKeyRedeemed` before version
2) gets its data subject (its key: `events.personal`) and its email and name sealed under the
subject's key, in place, at the newest schema version; nothing else of it changes. The events
table's no-update trigger is lifted for each batch's transaction only
(`events.sql.dialect.rewriting_events`). The keys view of each stream touched is then folded
again from the store, so it holds the tokens too. Run once after upgrading; running it again
finds nothing left to do.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Engine

from events import codec
from events.model import CandidateKeyIssued, CandidateKeyRedeemed, Event
from events.sql.dialect import dialect_of
from events.sql.store import SqlEventStore, to_recorded
from events.sql.tables import events_table as events
from events.sql.tables import subject_keys_table as subject_keys
from events.sql.vault import SqlVault
from projections.candidate_keys import CandidateKeysProjection
from projections.projector import Tracked, fold_new, load_states, save

BATCH = 500


def _before_sealing(cls: type[Event]) -> Any:
    return and_(events.c.type == cls.type_name, events.c.schema_version < cls.schema_version)


_CLEAR = or_(_before_sealing(CandidateKeyIssued), _before_sealing(CandidateKeyRedeemed))


def seal_clear_events(engine: Engine, store: SqlEventStore, vault: SqlVault, batch: int = BATCH) -> int:
    """Seal every event still in clear; returns how many were rewritten."""
    sealed = 0
    streams: set[uuid.UUID] = set()
    for rows in _clear_rows(engine, batch):
        with engine.begin() as conn, dialect_of(conn).rewriting_events(conn):
            for row in rows:
                event = _with_subject(to_recorded(row).event)
                result = vault.seal(row.event_id, event, codec.encode(event))
                if result.subject is not None:
                    conn.execute(insert(subject_keys).values(result.subject))
                conn.execute(
                    update(events)
                    .where(events.c.position == row.position)
                    .values(data=result.data, schema_version=type(event).schema_version)
                )
                streams.add(row.stream_id)
        sealed += len(rows)
    refold_keys(engine, store, streams)
    return sealed


def _clear_rows(engine: Engine, batch: int) -> Iterator[list[Any]]:
    after = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(events)
                .where(_CLEAR, events.c.position > after)
                .order_by(events.c.position)
                .limit(batch)
            ).all()
        if not rows:
            return
        yield rows
        after = rows[-1].position


def _with_subject(event: Event) -> Event:
    """The event with the subject its personal fields belong to: its key (`events.personal`)."""
    assert isinstance(event, CandidateKeyIssued | CandidateKeyRedeemed)
    return dataclasses.replace(event, subject_id=event.key_id)


def refold_keys(engine: Engine, store: SqlEventStore, stream_ids: set[uuid.UUID]) -> None:
    """Write these streams' keys again from a fold of the store, under their stream locks (so a
    worker applying one meanwhile waits, then finds the rows as fresh as its own)."""
    projection = CandidateKeysProjection()
    for stream_id in stream_ids:
        with engine.begin() as conn:
            load_states(conn, [projection], [stream_id], lock=True)
            initial = Tracked(stream_id, 0, projection.initial(stream_id))
            save(conn, projection.rows([fold_new(projection, initial, store.load(stream_id))]))
