"""Rebuild a projection from the event store alone, while the API keeps serving.

1. Build (`build`): read every event once, ordered by stream, from one consistent snapshot
   through a server-side cursor; fold each stream (one stream in memory at a time) and COPY the
   rows into fresh tables (`fresh`). Memory does not grow with the number of events. With
   several workers, each takes a range of streams in a process of its own (`parallel`).
2. Catch up (`swap`): apply to the fresh tables whatever the store holds beyond the version they
   reflect (events committed while building), with the same code the worker uses.
3. Swap (`swap`): under an exclusive lock that every applying transaction takes shared (so no
   worker writes meanwhile), catch up the last few events, drop the live tables and rename the
   fresh ones into their place, in one transaction. Readers wait a moment on the rename and then
   see the new view: never an empty or half-built one. A dry run compares instead (`compare`).

A rebuild never appends or publishes an event, never runs the cascade, and never touches the
pending rows of read-your-writes (the worker owns those).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from projections.projector import Projection
from projections.rebuild import build, compare, fresh, swap
from projections.rebuild.build import OnProgress

__all__ = ["OnProgress", "RebuildReport", "RebuildRunning", "rebuild"]

#: Held (session-level) for a whole rebuild, so two rebuilds never build into the same tables.
REBUILD_LOCK_ID = 0x72656275  # "rebu"


class RebuildRunning(RuntimeError):
    """Another rebuild of this database is in progress."""


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
    fresh_projections = fresh.renamed(projections)
    with engine.connect() as guard:
        if not guard.scalar(text("SELECT pg_try_advisory_lock(:id)"), {"id": REBUILD_LOCK_ID}):
            raise RebuildRunning("another rebuild of this database is running")
        try:
            _rebuild_into(
                engine, projections, fresh_projections, report, dry_run, on_progress, flush_every, workers
            )
        finally:
            guard.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": REBUILD_LOCK_ID})
            guard.commit()
    report.seconds = time.monotonic() - started
    return report


def _rebuild_into(
    engine: Engine,
    projections: Sequence[Projection[Any]],
    fresh_projections: Sequence[Projection[Any]],
    report: RebuildReport,
    dry_run: bool,
    on_progress: OnProgress | None,
    flush_every: int,
    workers: int | None,
) -> None:
    fresh.create(engine, fresh_projections)
    try:
        report.events, report.streams = build.build(
            engine,
            fresh_projections,
            on_progress or (lambda *_: None),
            flush_every,
            workers or os.cpu_count() or 1,
        )
        report.caught_up = swap.catch_up(engine, fresh_projections)
        fresh.analyze(engine, fresh_projections)
        if dry_run:
            report.differences = compare.differences(engine, projections, fresh_projections)
        else:
            report.caught_up += swap.swap(engine, projections, fresh_projections)
            report.swapped = True
    finally:
        if not report.swapped:
            fresh.drop(engine, fresh_projections)
