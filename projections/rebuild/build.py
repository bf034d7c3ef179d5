"""Step 1 of a rebuild: every stream of one consistent snapshot of the store, folded into the
fresh tables.

The events are read once, ordered by stream, through a server-side cursor, one stream in memory
at a time; a stream's rows are written with COPY after its last event, so memory does not grow
with the number of events and no upsert is needed.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy.engine import Engine

from events import codec
from events.model import RecordedEvent, StoredEvent
from events.sql.engine import libpq_url
from projections.projector import Projection, Tracked, fold_new
from projections.rebuild.parallel import run_in_processes

#: Called with (events done, events in total) as the build goes.
OnProgress = Callable[[int, int], None]

#: Everything projections read; not `metadata`, whose JSON would cost a third of the pass.
_COLUMNS = "position, event_id, stream_id, stream_version, type, schema_version, data, recorded_at"


def build(
    engine: Engine, fresh: Sequence[Projection[Any]], on_progress: OnProgress, flush_every: int, workers: int
) -> tuple[int, int]:
    """Fold every stream of one consistent snapshot into the fresh tables; (events, streams).

    The snapshot is exported to `workers` processes, each taking a range of stream ids, so
    the pass uses every core while all of them see exactly the same events."""
    with psycopg.connect(libpq_url(engine)) as coordinator:
        coordinator.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        coordinator.read_only = True
        snapshot = coordinator.execute("SELECT pg_export_snapshot()").fetchone()[0]
        total = coordinator.execute("SELECT count(*) FROM events").fetchone()[0]
        ranges = _stream_ranges(coordinator, workers)
        job = Job(libpq_url(engine), snapshot, list(fresh), flush_every)
        if len(ranges) == 1:
            return job.run(ranges[0], lambda done: on_progress(done, total))
        return run_in_processes(job, ranges, total, on_progress)


def _stream_ranges(conn: psycopg.Connection, workers: int) -> list[tuple[Any, Any]]:
    """`workers` ranges of stream ids with about as many streams each."""
    if workers <= 1:
        return [(None, None)]
    fractions = [n / workers for n in range(1, workers)]
    bounds = conn.execute(
        "SELECT percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY stream_id) "
        "FROM events WHERE stream_version = 1",
        (fractions,),
    ).fetchone()[0]
    if not bounds or None in bounds:
        return [(None, None)]
    edges = [None, *bounds, None]
    return list(itertools.pairwise(edges))


@dataclass
class Job:
    """One worker's share of a build: picklable, so it can run in another process."""

    conninfo: str
    snapshot: str
    fresh: list[Projection[Any]]
    flush_every: int

    def run(self, stream_range: tuple[Any, Any], progress: Callable[[int], None]) -> tuple[int, int]:
        with psycopg.connect(self.conninfo) as reader, psycopg.connect(self.conninfo) as writer:
            reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            reader.read_only = True
            reader.execute(f"SET TRANSACTION SNAPSHOT {_literal(self.snapshot)}")
            done = streams = 0
            folded: dict[str, list[Tracked]] = {p.name: [] for p in self.fresh}
            for stream_id, events in _streams(reader, stream_range):
                for projection in self.fresh:
                    start = Tracked(stream_id, 0, projection.initial(stream_id))
                    folded[projection.name].append(fold_new(projection, start, events))
                done += len(events)
                streams += 1
                if streams % self.flush_every == 0:
                    _copy(writer, self.fresh, folded)
                    progress(done)
            _copy(writer, self.fresh, folded)
            progress(done)
            return done, streams


def _literal(snapshot_id: str) -> str:
    if not all(c.isalnum() or c == "-" for c in snapshot_id):
        raise ValueError(f"unexpected snapshot id {snapshot_id!r}")
    return f"'{snapshot_id}'"


def _copy(
    conn: psycopg.Connection, fresh: Sequence[Projection[Any]], folded: dict[str, list[Tracked]]
) -> None:
    """COPY the rows of fully folded streams into the fresh tables: no upsert is needed, as a
    stream's rows are written once, after its last event."""
    with conn.cursor() as cursor:
        for projection in fresh:
            for table, rows in projection.rows(folded[projection.name]).items():
                names = [column.name for column in table.columns]
                with cursor.copy(f'COPY "{table.name}" ({", ".join(names)}) FROM STDIN') as copy:
                    for row in rows:
                        copy.write_row([row[name] for name in names])
            folded[projection.name].clear()
    conn.commit()


def _streams(conn, stream_range: tuple[Any, Any]) -> Iterator[tuple[uuid.UUID, list[RecordedEvent]]]:
    """Each stream's events in order, from a server-side cursor, one stream at a time."""
    low, high = stream_range
    cursor = conn.cursor(name="rebuild_events")
    cursor.itersize = 10_000
    cursor.execute(
        f"SELECT {_COLUMNS} FROM events "
        "WHERE (%(low)s::uuid IS NULL OR stream_id >= %(low)s) "
        "AND (%(high)s::uuid IS NULL OR stream_id < %(high)s) "
        "ORDER BY stream_id, stream_version",
        {"low": low, "high": high},
    )
    current: uuid.UUID | None = None
    events: list[RecordedEvent] = []
    for row in cursor:
        recorded = _recorded(row)
        if recorded.stream_id != current and events:
            yield current, events
            events = []
        current = recorded.stream_id
        events.append(recorded)
    if events:
        yield current, events
    cursor.close()


def _recorded(row: tuple) -> RecordedEvent:
    """A rebuild reads no metadata: no projection uses it."""
    position, event_id, stream_id, version, type_name, schema_version, data, recorded_at = row
    return codec.recorded(
        StoredEvent(position, event_id, stream_id, version, type_name, schema_version, data, {}, recorded_at)
    )
