"""Rebuild a projection from the event store alone, while the API keeps serving.

1. Build: read every event once, ordered by stream, from one consistent snapshot through a
   server-side cursor; fold each stream (one stream in memory at a time) and COPY the rows
   into fresh tables. Memory does not grow with the number of events.
2. Catch up: apply to the fresh tables whatever the store holds beyond the version they
   reflect (events committed while building), with the same code the worker uses.
3. Swap: under an exclusive lock that every applying transaction takes shared (so no worker
   writes meanwhile), catch up the last few events, drop the live tables and rename the fresh
   ones into their place, in one transaction. Readers wait a moment on the rename and then see
   the new view: never an empty or half-built one.

A rebuild never appends or publishes an event, never runs the cascade, and never touches the
pending rows of read-your-writes (the worker owns those).
"""

from __future__ import annotations

import itertools
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Table, func, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from events import codec
from events.model import RecordedEvent, StoredEvent
from events.sql.engine import libpq_url
from events.sql.store import to_recorded
from events.sql.tables import SWAP_LOCK_ID, events_table
from projections.projector import Projection, Tracked, apply_batch, fold_new

FRESH_SUFFIX = "_rebuild"
SWAP_LOCK_TIMEOUT = "1s"
SWAP_ATTEMPTS = 60
#: Held (session-level) for a whole rebuild, so two rebuilds never build into the same tables.
REBUILD_LOCK_ID = 0x72656275  # "rebu"


class RebuildRunning(RuntimeError):
    """Another rebuild of this database is in progress."""


#: Called with (events done, events in total) as the build goes.
OnProgress = Callable[[int, int], None]


@dataclass
class RebuildReport:
    projections: list[str]
    events: int = 0
    streams: int = 0
    caught_up: int = 0
    seconds: float = 0.0
    swapped: bool = False
    #: Dry runs only: per table that differs, rows only in the rebuilt view and only in the live one.
    differences: dict[str, dict[str, int]] = field(default_factory=dict)


def rebuild(
    engine: Engine,
    projections: Sequence[Projection[Any]],
    dry_run: bool = False,
    on_progress: OnProgress | None = None,
    flush_every: int = 5000,
    workers: int | None = None,
) -> RebuildReport:
    """Rebuild the projections in one pass over the store and swap them in together, or with
    `dry_run` compare them with the live views and leave those alone."""
    started = time.monotonic()
    report = RebuildReport([p.name for p in projections])
    fresh = [p.renamed(FRESH_SUFFIX) for p in projections]
    with engine.connect() as guard:
        if not guard.scalar(text("SELECT pg_try_advisory_lock(:id)"), {"id": REBUILD_LOCK_ID}):
            raise RebuildRunning("another rebuild of this database is running")
        try:
            _rebuild_into(engine, projections, fresh, report, dry_run, on_progress, flush_every, workers)
        finally:
            guard.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": REBUILD_LOCK_ID})
            guard.commit()
    report.seconds = time.monotonic() - started
    return report


def _rebuild_into(
    engine: Engine,
    projections: Sequence[Projection[Any]],
    fresh: Sequence[Projection[Any]],
    report: RebuildReport,
    dry_run: bool,
    on_progress: OnProgress | None,
    flush_every: int,
    workers: int | None,
) -> None:
    _create(engine, fresh)
    try:
        report.events, report.streams = _build(
            engine, fresh, on_progress or (lambda *_: None), flush_every, workers or os.cpu_count() or 1
        )
        report.caught_up = _catch_up(engine, fresh)
        _analyze(engine, fresh)
        if dry_run:
            report.differences = _differences(engine, projections, fresh)
        else:
            report.caught_up += _swap(engine, projections, fresh)
            report.swapped = True
    finally:
        if not report.swapped:
            _drop(engine, fresh)


# --- build ------------------------------------------------------------------------------------


def _tables(projections: Sequence[Projection[Any]]) -> list[Table]:
    return [table for projection in projections for table in projection.tables]


def _create(engine: Engine, fresh: Sequence[Projection[Any]]) -> None:
    _drop(engine, fresh)  # leftovers of an interrupted rebuild
    with engine.begin() as conn:
        for table in _tables(fresh):
            table.create(conn)


def _drop(engine: Engine, projections: Sequence[Projection[Any]]) -> None:
    with engine.begin() as conn:
        for table in reversed(_tables(projections)):
            table.drop(conn, checkfirst=True)


#: Everything projections read; not `metadata`, whose JSON would cost a third of the pass.
_COLUMNS = "position, event_id, stream_id, stream_version, type, schema_version, data, recorded_at"


def _build(
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
        job = _Job(libpq_url(engine), snapshot, list(fresh), flush_every)
        if len(ranges) == 1:
            return job.run(ranges[0], lambda done: on_progress(done, total))
        return _run_in_processes(job, ranges, total, on_progress)


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
class _Job:
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


def _run_in_processes(
    job: _Job, ranges: list[tuple[Any, Any]], total: int, on_progress: OnProgress
) -> tuple[int, int]:
    """Run each range in a child `python -m projections.rebuild` (a fresh interpreter: no
    forked locks or connections, whatever the parent is running), reading its progress."""
    updates: queue.Queue = queue.Queue()
    children = []
    for index, stream_range in enumerate(ranges):
        child = subprocess.Popen(
            [sys.executable, "-m", "projections.rebuild"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
        )
        child.stdin.write(pickle.dumps((job, stream_range)))
        child.stdin.close()
        threading.Thread(target=_relay_lines, args=(index, child.stdout, updates), daemon=True).start()
        children.append(child)
    done_by: dict[int, int] = {}
    results: dict[int, tuple[int, int]] = {}
    try:
        while len(results) < len(children):
            index, kind, value = updates.get()
            if kind == "progress":
                done_by[index] = value
                on_progress(sum(done_by.values()), total)
            elif kind == "done":
                results[index] = value
            elif index not in results:  # the child's output ended before it reported
                raise RuntimeError(f"rebuild worker {index} failed (exit {children[index].wait()})")
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()
            child.stdout.close()
    return sum(r[0] for r in results.values()), sum(r[1] for r in results.values())


def _relay_lines(index: int, stream, updates: queue.Queue) -> None:
    for line in stream:
        kind, *numbers = line.decode().split()
        value = tuple(map(int, numbers))
        updates.put((index, kind, value if kind == "done" else value[0]))
    updates.put((index, "exit", None))


def _worker_main() -> None:
    job, stream_range = pickle.loads(sys.stdin.buffer.read())
    events, streams = job.run(stream_range, lambda done: print("progress", done, flush=True))
    print("done", events, streams, flush=True)


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


# --- catch up and swap ----------------------------------------------------------------------


def _behind(conn: Connection, projection: Projection[Any]) -> list[RecordedEvent]:
    """Events the projection's tables do not reflect yet, in stream order."""
    versions = projection.versions
    query = (
        select(events_table)
        .select_from(events_table.outerjoin(versions.table, versions.stream_id == events_table.c.stream_id))
        .where(events_table.c.stream_version > func.coalesce(versions.version, 0))
        .order_by(events_table.c.stream_id, events_table.c.stream_version)
    )
    return [to_recorded(row) for row in conn.execute(query)]


def _apply_missing(conn: Connection, projection: Projection[Any]) -> int:
    missing = _behind(conn, projection)
    if missing:
        apply_batch(conn, [projection], missing, lambda *_: [])  # complete ranges: never a gap
    return len(missing)


def _analyze(engine: Engine, fresh: Sequence[Projection[Any]]) -> None:
    """Planner statistics before the swap, so the first queries on the new tables plan well."""
    with engine.begin() as conn:
        for table in _tables(fresh):
            conn.execute(text(f'ANALYZE "{table.name}"'))


def _catch_up(engine: Engine, fresh: Sequence[Projection[Any]]) -> int:
    with engine.begin() as conn:
        return sum(_apply_missing(conn, projection) for projection in fresh)


def _swap(engine: Engine, live: Sequence[Projection[Any]], fresh: Sequence[Projection[Any]]) -> int:
    """Retry a swap that could not get its locks quickly: while it waits for a lock, every
    reader of the view queues behind it, so it must never wait long (an analyst's open
    transaction on the view would otherwise stall the API)."""
    for attempt in itertools.count(1):
        try:
            return _swap_once(engine, live, fresh)
        except OperationalError as error:
            if not isinstance(error.orig, psycopg.errors.LockNotAvailable) or attempt >= SWAP_ATTEMPTS:
                raise
            time.sleep(min(0.1 * attempt, 2.0))
    raise AssertionError("unreachable")


def _swap_once(engine: Engine, live: Sequence[Projection[Any]], fresh: Sequence[Projection[Any]]) -> int:
    with engine.begin() as conn:
        conn.execute(text(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'"))
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": SWAP_LOCK_ID})
        caught_up = sum(_apply_missing(conn, projection) for projection in fresh)
        for live_table, fresh_table in zip(_tables(live), _tables(fresh), strict=True):
            indexes = conn.scalars(
                text("SELECT indexname FROM pg_indexes WHERE tablename = :t"), {"t": fresh_table.name}
            ).all()
            conn.execute(text(f'DROP TABLE "{live_table.name}"'))
            conn.execute(text(f'ALTER TABLE "{fresh_table.name}" RENAME TO "{live_table.name}"'))
            for index in indexes:
                renamed = live_table.name + index.removeprefix(fresh_table.name)
                conn.execute(text(f'ALTER INDEX "{index}" RENAME TO "{renamed}"'))
        return caught_up


def _differences(
    engine: Engine, live: Sequence[Projection[Any]], fresh: Sequence[Projection[Any]]
) -> dict[str, dict[str, int]]:
    found = {}
    with engine.connect() as conn:
        for live_table, fresh_table in zip(_tables(live), _tables(fresh), strict=True):
            only_fresh = conn.scalar(
                text(f'SELECT count(*) FROM (TABLE "{fresh_table.name}" EXCEPT TABLE "{live_table.name}") d')
            )
            only_live = conn.scalar(
                text(f'SELECT count(*) FROM (TABLE "{live_table.name}" EXCEPT TABLE "{fresh_table.name}") d')
            )
            if only_fresh or only_live:
                found[live_table.name] = {"onlyRebuilt": only_fresh, "onlyLive": only_live}
    return found


if __name__ == "__main__":
    _worker_main()
