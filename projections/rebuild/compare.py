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
            only_fresh = conn.scalar(
                text(f'SELECT count(*) FROM (TABLE "{fresh_table.name}" EXCEPT TABLE "{live_table.name}") d')
            )
            only_live = conn.scalar(
                text(f'SELECT count(*) FROM (TABLE "{live_table.name}" EXCEPT TABLE "{fresh_table.name}") d')
            )
            if only_fresh or only_live:
                found[live_table.name] = {"onlyRebuilt": only_fresh, "onlyLive": only_live}
    return found
