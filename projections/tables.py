"""Read-model tables. Everything here can be dropped and rebuilt from the event store."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    Uuid,
    func,
    text,
)

from events.candidate import CandidateKey
from events.model import AssessmentDetails
from events.sql.types import Timestamp, columns_of

metadata = MetaData()


def assessments_view(name: str = "assessments_view", meta: MetaData = metadata) -> Table:
    """One row per assessment stream; deleted ones keep their row (with `deleted_at`) so the
    stream version they reflect survives and a redelivered creation cannot resurrect them."""
    return Table(
        name,
        meta,
        Column("id", Uuid, primary_key=True),
        Column("org_id", Text, nullable=False),
        *columns_of(AssessmentDetails),
        Column("created_at", Timestamp, nullable=False),
        Column("updated_at", Timestamp, nullable=False),
        Column("deleted_at", Timestamp),
        Column("version", Integer, nullable=False),
        Index(
            f"{name}_active_idx",
            "org_id",
            "created_at",
            "id",
            postgresql_where=text("deleted_at IS NULL"),
            sqlite_where=text("deleted_at IS NULL"),
        ),
    )


def candidate_keys_view(name: str = "candidate_keys_view", meta: MetaData = metadata) -> Table:
    """One row per key: its record (`events.candidate.CandidateKey`), whose fields are the
    columns, including the key's session (a key has at most one)."""
    table = Table(
        name,
        meta,
        *columns_of(CandidateKey, primary_key="id"),
        Index(f"{name}_assessment_idx", "assessment_id", "created_at", "id"),
        Index(f"{name}_session_idx", "session_id", unique=True),
        Index(f"{name}_subject_idx", "subject_id"),
    )
    # What the expiry step looks for: keys that have not ended by an event, by when they end.
    Index(
        f"{name}_open_idx",
        func.coalesce(table.c.deadline, table.c.expires_at),
        postgresql_where=_OPEN,
        sqlite_where=_OPEN,
    )
    return table


_OPEN = text("revoked_at IS NULL AND completed_at IS NULL AND expired_at IS NULL")


def candidate_keys_versions(name: str = "candidate_keys_versions", meta: MetaData = metadata) -> Table:
    """The stream version the keys projection reflects, per assessment stream."""
    return Table(
        name,
        meta,
        Column("stream_id", Uuid, primary_key=True),
        Column("version", Integer, nullable=False),
    )


ASSESSMENTS_VIEW = assessments_view()
CANDIDATE_KEYS_VIEW = candidate_keys_view()
CANDIDATE_KEYS_VERSIONS = candidate_keys_versions()
