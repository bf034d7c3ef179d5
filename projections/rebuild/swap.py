"""Steps 2 and 3 of a rebuild: catch the fresh tables up with what the store committed while
they were built, then swap them in for the live ones in one transaction."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from events.model import RecordedEvent
from events.sql.store import to_recorded
from events.sql.tables import SWAP_LOCK_ID, events_table
from projections.projector import Projection, apply_batch
from projections.rebuild.fresh import tables

SWAP_LOCK_TIMEOUT = "1s"
SWAP_ATTEMPTS = 60


def catch_up(engine: Engine, fresh: Sequence[Projection[Any]]) -> int:
    """Apply what the store holds beyond the version the fresh tables reflect; how many events."""
    with engine.begin() as conn:
        return sum(_apply_missing(conn, projection) for projection in fresh)


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


def swap(engine: Engine, live: Sequence[Projection[Any]], fresh: Sequence[Projection[Any]]) -> int:
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
        for live_table, fresh_table in zip(tables(live), tables(fresh), strict=True):
            indexes = conn.scalars(
                text("SELECT indexname FROM pg_indexes WHERE tablename = :t"), {"t": fresh_table.name}
            ).all()
            conn.execute(text(f'DROP TABLE "{live_table.name}"'))
            conn.execute(text(f'ALTER TABLE "{fresh_table.name}" RENAME TO "{live_table.name}"'))
            for index in indexes:
                renamed = live_table.name + index.removeprefix(fresh_table.name)
                conn.execute(text(f'ALTER INDEX "{index}" RENAME TO "{renamed}"'))
        return caught_up
