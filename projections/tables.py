"""Read-model tables. Everything here can be dropped and rebuilt from the event store,
except the OSS issue catalogue, which is reference data imported by operators."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    Column,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from events.types import Json, Timestamp

metadata = MetaData()


def assessments_view(name: str = "assessments_view", meta: MetaData = metadata) -> Table:
    """One row per assessment stream; deleted ones keep their row (with `deleted_at`) so the
    stream version they reflect survives and a redelivered creation cannot resurrect them."""
    return Table(
        name,
        meta,
        Column("id", Uuid, primary_key=True),
        Column("org_id", Text, nullable=False),
        Column("title", Text, nullable=False),
        Column("role", Text, nullable=False),
        Column("task_brief", Text, nullable=False),
        Column("repo_url", Text),
        Column("time_limit_minutes", Integer),
        Column("expires_in_days", Integer, nullable=False),
        Column("issue_id", Text),
        Column("rubric_id", Uuid),
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
    return Table(
        name,
        meta,
        Column("id", Uuid, primary_key=True),
        Column("assessment_id", Uuid, nullable=False),
        Column("org_id", Text, nullable=False),
        Column("candidate_email", Text),
        Column("candidate_name", Text),
        Column("org_name", Text),
        Column("expires_at", Timestamp, nullable=False),
        Column("redeemed_at", Timestamp),
        Column("completed_at", Timestamp),
        Column("created_at", Timestamp, nullable=False),
        Column("revoked_at", Timestamp),
        Column("revoke_reason", Text),
        Index(f"{name}_assessment_idx", "assessment_id", "created_at", "id"),
    )


def candidate_keys_versions(name: str = "candidate_keys_versions", meta: MetaData = metadata) -> Table:
    """The stream version the keys projection reflects, per assessment stream."""
    return Table(
        name,
        meta,
        Column("stream_id", Uuid, primary_key=True),
        Column("version", Integer, nullable=False),
    )


oss_issues = Table(
    "oss_issues",
    metadata,
    Column("id", Text, primary_key=True),
    Column("title", Text, nullable=False),
    Column("repo_url", Text, nullable=False),
    Column("issue_url", Text, nullable=False),
    Column("task_brief", Text, nullable=False),
    Column("language", Text, nullable=False),
    Column("difficulty", Text, nullable=False),
    Column("labels", Json, nullable=False, server_default=text("'[]'")),
)

ASSESSMENTS_VIEW = assessments_view()
CANDIDATE_KEYS_VIEW = candidate_keys_view()
CANDIDATE_KEYS_VERSIONS = candidate_keys_versions()


def upsert(conn: Connection, table: Table, key: str, rows: list[dict]) -> None:
    """Insert or overwrite rows by their primary key (`rows` hold at most one row per key).
    On PostgreSQL the rows travel as one JSON document in one statement: a batch of the
    worker's costs one statement per table, not one per row."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(json_upsert_sql(table, key), {"rows": json_rows(rows)})
    else:
        conn.execute(_sqlite_upsert(table, key), rows)


def json_rows(rows: list[dict]) -> str:
    """Rows as the JSON document `json_upsert_sql` takes."""
    return json.dumps(rows, default=_json_value)


def _json_value(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a column value")


_quote = postgresql.dialect().identifier_preparer.quote


@cache
def rows_of_streams_sql(table: Table, stream_column: str) -> str:
    """PostgreSQL: the table's rows of the streams in the array parameter."""
    columns = ", ".join(_quote(c.name) for c in table.columns)
    return f"SELECT {columns} FROM {_quote(table.name)} WHERE {_quote(stream_column)} = ANY(%s)"


@cache
def json_upsert_sql(table: Table, key: str) -> str:
    """PostgreSQL: upsert the rows of the JSON document parameter `rows` by `key`."""
    columns = ", ".join(_quote(c.name) for c in table.columns)
    updates = ", ".join(
        f"{_quote(c.name)} = EXCLUDED.{_quote(c.name)}" for c in table.columns if c.name != key
    )
    name = _quote(table.name)
    return (
        f"INSERT INTO {name} ({columns}) "
        f"SELECT {columns} FROM jsonb_populate_recordset(NULL::{name}, CAST(%(rows)s AS jsonb)) "
        f"ON CONFLICT ({_quote(key)}) DO UPDATE SET {updates}"
    )


@cache
def _sqlite_upsert(table: Table, key: str):
    """Built once per table: a statement with every column in its SET is costly to rebuild
    (and to compute a cache key for) on every batch."""
    stmt = sqlite.insert(table)
    return stmt.on_conflict_do_update(
        index_elements=[table.c[key]],
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name != key},
    )
