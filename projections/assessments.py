"""The active-assessments projection: one row per assessment, what the API lists and gets."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import singledispatch
from typing import Any

from sqlalchemy import MetaData, Table

from events.model import (
    AssessmentCreated,
    AssessmentDeleted,
    AssessmentDetails,
    Event,
    RecordedEvent,
    details_of,
)
from projections.projector import Tracked, Versions
from projections.tables import ASSESSMENTS_VIEW, assessments_view


@dataclass(frozen=True, kw_only=True)
class _RowIdentity:
    id: uuid.UUID
    org_id: str


@dataclass(frozen=True, kw_only=True)
class _RowTimes:
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class AssessmentRow(_RowTimes, AssessmentDetails, _RowIdentity):
    """One row of the view: the id and organisation, the assessment's own fields (from their
    one definition, `AssessmentDetails`), and its times, in that order."""


def row_from_created(event: AssessmentCreated) -> AssessmentRow:
    """The view of a just-created assessment."""
    return AssessmentRow(
        id=event.assessment_id,
        org_id=event.org_id,
        **details_of(event),
        created_at=event.created_at,
        updated_at=event.created_at,
    )


# One case per event type, registered by name (see `events.aggregate.evolve` for why).


def _unchanged(event: Event, row: AssessmentRow | None) -> AssessmentRow | None:
    return row  # key events do not change the assessment itself


def _created(event: AssessmentCreated, row: AssessmentRow | None) -> AssessmentRow | None:
    return row_from_created(event)


def _deleted(event: AssessmentDeleted, row: AssessmentRow | None) -> AssessmentRow | None:
    return row and replace(row, deleted_at=event.deleted_at, updated_at=event.deleted_at)


#: The row after one event: `evolve_row(event, row)`.
evolve_row = singledispatch(_unchanged)
evolve_row.register(AssessmentCreated, _created)
evolve_row.register(AssessmentDeleted, _deleted)


class AssessmentsProjection:
    name = "assessments"

    def __init__(self, table: Table = ASSESSMENTS_VIEW) -> None:
        self.table = table
        self.tables = (table,)
        self.versions = Versions(table, table.c.id, table.c.version)
        self.sources = ((table, table.c.id),)

    def renamed(self, suffix: str) -> AssessmentsProjection:
        """The same projection over fresh tables named `<table><suffix>` (for a rebuild)."""
        return AssessmentsProjection(assessments_view(ASSESSMENTS_VIEW.name + suffix, MetaData()))

    def initial(self, stream_id: uuid.UUID) -> AssessmentRow | None:
        return None

    def evolve(self, value: AssessmentRow | None, recorded: RecordedEvent) -> AssessmentRow | None:
        return evolve_row(recorded.event, value)

    def states(self, rows: Sequence[Sequence[Mapping[str, Any]]]) -> dict[uuid.UUID, Tracked]:
        (views,) = rows
        return {
            row["id"]: Tracked(row["id"], row["version"], AssessmentRow(**_without(row, "version")))
            for row in views
        }

    def rows(self, states: Sequence[Tracked]) -> dict[Table, list[dict]]:
        live = [s for s in states if s.value is not None]
        return {self.table: [{**vars(s.value), "version": s.version} for s in live]}


def _without(mapping, *names: str) -> dict:
    return {k: v for k, v in mapping.items() if k not in names}
