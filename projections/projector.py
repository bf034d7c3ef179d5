"""Applying events to projections: idempotent, order-tolerant, many events per transaction.

Each projection remembers, per stream, the version it reflects. An event at or below it is a
duplicate and skipped; one beyond the next expected version means something was lost or
reordered on the way, so the stream's missing events are read from the store (the truth) and
applied in order. That makes redelivery, reordering and several workers at once harmless.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Column, Table, delete, text
from sqlalchemy.engine import Connection

from events.db import projection_pending_table
from events.model import RecordedEvent
from projections.tables import upsert

S = TypeVar("S")

#: Reads a stream's events after a version from the event store.
LoadStream = Callable[[uuid.UUID, int], list[RecordedEvent]]


@dataclass
class Tracked(Generic[S]):
    """A projection's state for one stream and the stream version it reflects."""

    stream_id: uuid.UUID
    version: int
    value: S


@dataclass(frozen=True)
class Versions:
    """Where a projection keeps, per stream, the stream version it reflects."""

    table: Table
    stream_id: Column
    version: Column


class Projection(Protocol[S]):
    name: str
    tables: tuple[Table, ...]
    versions: Versions

    def renamed(self, suffix: str) -> Projection[S]: ...

    def initial(self, stream_id: uuid.UUID) -> S: ...

    def evolve(self, value: S, recorded: RecordedEvent) -> S:
        """Pure: the state after one event."""

    def load(self, conn: Connection, stream_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Tracked[S]]: ...

    def rows(self, states: Sequence[Tracked[S]]) -> dict[Table, list[dict]]:
        """Pure: the rows that represent these states, per table."""


@dataclass
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    gaps_filled: int = 0
    positions: set[int] = field(default_factory=set)


def by_stream(events: Iterable[RecordedEvent]) -> dict[uuid.UUID, list[RecordedEvent]]:
    grouped: dict[uuid.UUID, dict[int, RecordedEvent]] = defaultdict(dict)
    for recorded in events:
        grouped[recorded.stream_id][recorded.stream_version] = recorded
    return {stream: [byv[v] for v in sorted(byv)] for stream, byv in grouped.items()}


def fold_new(
    projection: Projection[Any], state: Tracked[Any], events: Sequence[RecordedEvent]
) -> Tracked[Any]:
    """Apply events in order to a copy of the state; the caller guarantees contiguity."""
    value = state.value
    for recorded in events:
        value = projection.evolve(value, recorded)
    return Tracked(state.stream_id, events[-1].stream_version if events else state.version, value)


def apply_batch(
    conn: Connection,
    projection: Projection[Any],
    events: Iterable[RecordedEvent],
    load_stream: LoadStream,
) -> BatchResult:
    result = BatchResult()
    streams = by_stream(events)
    states = projection.load(conn, list(streams))
    changed = []
    for stream_id, stream_events in streams.items():
        state = states.get(stream_id) or Tracked(stream_id, 0, projection.initial(stream_id))
        todo = [e for e in stream_events if e.stream_version > state.version]
        result.duplicates += len(stream_events) - len(todo)
        if not todo:
            continue
        if not _contiguous(state.version, todo):
            todo = load_stream(stream_id, state.version)
            result.gaps_filled += 1
        changed.append(fold_new(projection, state, todo))
        result.applied += len(todo)
        result.positions.update(e.position for e in todo)
    save(conn, projection, changed)
    return result


def save(conn: Connection, projection: Projection[Any], states: Sequence[Tracked[Any]]) -> None:
    for table, rows in projection.rows(states).items():
        upsert(conn, table, table.primary_key.columns.values()[0].name, rows)


def _contiguous(version: int, events: Sequence[RecordedEvent]) -> bool:
    return [e.stream_version for e in events] == list(range(version + 1, version + 1 + len(events)))


#: Taken shared by every transaction that applies events, and exclusively by a rebuild while it
#: swaps its fresh tables in, so no worker writes to a table that is being replaced.
SWAP_LOCK_ID = 0x70726F6A  # "proj"


def lock_streams(conn: Connection, stream_ids: set[uuid.UUID]) -> None:
    """Serialise appliers per stream for this transaction (in a fixed order, so no deadlock):
    two workers applying the same stream must not overwrite each other's newer state. (SQLite,
    in `assessments dev`, has one writer at a time anyway.)"""
    if conn.dialect.name != "postgresql":
        return
    conn.execute(text("SELECT pg_advisory_xact_lock_shared(:id)"), {"id": SWAP_LOCK_ID})
    conn.execute(
        text(
            "SELECT pg_advisory_xact_lock(hashtextextended(s::text, 0)) "
            "FROM unnest(CAST(:ids AS uuid[])) AS s ORDER BY s"
        ),
        {"ids": sorted(stream_ids)},
    )


def clear_pending(conn: Connection, positions: Iterable[int]) -> None:
    """Mark events as projected (read-your-writes waits on these rows), in the projection's
    own transaction."""
    positions = list(positions)
    if positions:
        conn.execute(
            delete(projection_pending_table).where(projection_pending_table.c.position.in_(positions))
        )
