"""A dry run's verdict: the rows that differ between the rebuilt views and the live ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from projections.projector import Projection
from projections.rebuild.fresh import tables


def differences(
    engine: Engine, live: Sequence[Projection[Any]], fresh: Sequence[Projection[Any]]
) -> dict[str, dict[str, int]]:
    """Per live table that differs: rows only in the rebuilt view and only in the live one."""
    found = {}
    with engine.connect() as conn:
        for live_table, fresh_table in zip(tables(live), tables(fresh), strict=True):
            # By name: a migration appends its columns where a fresh table has them in order.
            columns = ", ".join(f'"{column.name}"' for column in live_table.columns)
            only_fresh = conn.scalar(text(_EXCEPT.format(columns, fresh_table.name, live_table.name)))
            only_live = conn.scalar(text(_EXCEPT.format(columns, live_table.name, fresh_table.name)))
            if only_fresh or only_live:
                found[live_table.name] = {"onlyRebuilt": only_fresh, "onlyLive": only_live}
    return found


_EXCEPT = 'SELECT count(*) FROM (SELECT {0} FROM "{1}" EXCEPT SELECT {0} FROM "{2}") d'
