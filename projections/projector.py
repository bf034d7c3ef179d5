"""Applying events to projections: idempotent, order-tolerant, many events per transaction.

Each projection remembers, per stream, the version it reflects. An event at or below it is a
duplicate and skipped; one beyond the next expected version means something was lost or
reordered on the way, so the stream's missing events are read from the store (the truth) and
applied in order. That makes redelivery, reordering and several workers at once harmless.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Column, Table
from sqlalchemy.engine import Connection

from events.model import RecordedEvent
from events.sql.dialect import dialect_of

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

    #: Where its state of a stream is read from: each table with its stream-id column.
    sources: tuple[tuple[Table, Column], ...]

    def states(self, rows: Sequence[Sequence[Mapping[str, Any]]]) -> dict[uuid.UUID, Tracked[S]]:
        """Pure: the states of the streams from the rows read from each of `sources`."""

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
    projections: Sequence[Projection[Any]],
    events: Iterable[RecordedEvent],
    load_stream: LoadStream,
    *,
    lock: bool = False,
    clear_pending: bool = False,
    commit: bool = False,
) -> list[BatchResult]:
    """Apply a batch of events to every projection in the caller's transaction. `lock` takes
    the batch's stream locks first (the worker: several may run); `clear_pending` deletes the
    events' pending rows with the writes (read-your-writes waits on them); `commit` ends the
    transaction with the writes (the caller's own commit then has nothing left to do).

    On PostgreSQL the whole batch is two round trips however many tables and rows it
    touches: the locks and every projection's reads in one pipeline, the writes and the
    COMMIT in another. Under load a round trip costs milliseconds of waiting for a CPU, and
    the dozen the batch used to take made up most of a 201's way to the projection. (SQLite,
    in `assessments dev`, takes no locks: it has one writer at a time anyway; the caller
    commits.)"""
    events = list(events)
    streams = by_stream(events)
    states = load_states(conn, projections, list(streams), lock=lock)
    results, writes = [], defaultdict(list)
    for projection, known in zip(projections, states, strict=True):
        result, changed = fold_batch(projection, streams, known, load_stream)
        results.append(result)
        for table, rows in projection.rows(changed).items():
            writes[table] += rows
    applied = reflected_by_all(results, events) if clear_pending else ()
    save(conn, writes, applied, commit=commit)
    return results


def reflected_by_all(results: Sequence[BatchResult], events: Sequence[RecordedEvent]) -> set[int]:
    """The positions whose pending rows the batch may delete: its own events (every projection
    applied each, skipped it as a duplicate or read it in a gap fill) and those that every
    projection's gap fill read. Each projection reads the store on its own, so an event
    appended in between is in the later reads only; its pending row stays until its message
    comes, or a reader waiting for it would read a view that does not show it yet."""
    read_by_all = set.intersection(*(r.positions for r in results)) if results else set()
    return read_by_all | {e.position for e in events}


def fold_batch(
    projection: Projection[Any],
    streams: Mapping[uuid.UUID, Sequence[RecordedEvent]],
    known: Mapping[uuid.UUID, Tracked[Any]],
    load_stream: LoadStream,
) -> tuple[BatchResult, list[Tracked[Any]]]:
    """The new states of the batch's streams (duplicates skipped, gaps filled from the store)."""
    result = BatchResult()
    changed = []
    for stream_id, stream_events in streams.items():
        state = known.get(stream_id) or Tracked(stream_id, 0, projection.initial(stream_id))
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
    return result, changed


def load_states(
    conn: Connection,
    projections: Sequence[Projection[Any]],
    stream_ids: Sequence[uuid.UUID],
    lock: bool = False,
) -> list[dict[uuid.UUID, Tracked[Any]]]:
    """Every projection's states of these streams, after taking their locks if `lock`."""
    read = dialect_of(conn).read_streams(conn, [p.sources for p in projections], stream_ids, lock)
    return [projection.states(rows) for projection, rows in zip(projections, read, strict=True)]


def save(
    conn: Connection, writes: Mapping[Table, list[dict]], applied: Collection[int] = (), commit: bool = False
) -> None:
    """Upsert the rows (by each table's primary key) and delete the `applied` events' pending
    rows, with the COMMIT if `commit` (where the database allows it in the same round trip)."""
    dialect_of(conn).write_batch(conn, writes, applied, commit)


def _contiguous(version: int, events: Sequence[RecordedEvent]) -> bool:
    return [e.stream_version for e in events] == list(range(version + 1, version + 1 + len(events)))
