"""The fresh tables a rebuild builds into, beside the live ones: the live tables' shapes under
names with a suffix, created empty, analysed once filled, and dropped unless swapped in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.engine import Engine

from projections.projector import Projection

FRESH_SUFFIX = "_rebuild"


def renamed(projections: Sequence[Projection[Any]]) -> list[Projection[Any]]:
    return [p.renamed(FRESH_SUFFIX) for p in projections]


def tables(projections: Sequence[Projection[Any]]) -> list[Table]:
    return [table for projection in projections for table in projection.tables]


def create(engine: Engine, fresh: Sequence[Projection[Any]]) -> None:
    drop(engine, fresh)  # leftovers of an interrupted rebuild
    with engine.begin() as conn:
        for table in tables(fresh):
            table.create(conn)


def drop(engine: Engine, projections: Sequence[Projection[Any]]) -> None:
    with engine.begin() as conn:
        for table in reversed(tables(projections)):
            table.drop(conn, checkfirst=True)


def analyze(engine: Engine, fresh: Sequence[Projection[Any]]) -> None:
    """Planner statistics before the swap, so the first queries on the new tables plan well."""
    with engine.begin() as conn:
        for table in tables(fresh):
            conn.execute(text(f'ANALYZE "{table.name}"'))
