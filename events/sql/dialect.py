"""The one place that chooses between PostgreSQL's and SQLite's ways of doing a thing.

Production runs on PostgreSQL and uses what it offers for speed and safety: the append as one
statement on the bare driver connection, a batch's reads and writes in psycopg pipelines under
advisory locks, one upsert statement per table, LISTEN/NOTIFY. `assessments dev` runs the same
code on SQLite, one portable statement at a time. Each difference is a method of `Portable`
(what any SQLAlchemy database does) that `Postgres` overrides, and `dialect_of` is the only
code that asks which database it talks to.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

import orjson
from psycopg.rows import dict_row
from sqlalchemy import Column, Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from events.crypto.cipher import MasterKeys
from events.sql.engine import driver_errors, libpq_url
from events.sql.outbox import PostgresOutbox, SqlOutbox
from events.sql.store import PostgresEventStore, SqlEventStore
from events.sql.tables import SWAP_LOCK_ID, projection_pending_table
from events.sql.token_cache import TokenCache
from events.sql.vault import SqlVault

#: Where a batch reads its rows: each table with its stream-id column.
Sources = Sequence[tuple[Table, Column]]


class Portable:
    """SQLite (`assessments dev`): what any SQLAlchemy database can do, a statement at a time."""

    #: Whether the schema is made by the Alembic migrations (else from the models, at start).
    migrated = False

    def event_store(self, engine: Engine, personal: SqlVault | None = None) -> SqlEventStore:
        return SqlEventStore(engine, personal)

    def outbox(self, engine: Engine) -> SqlOutbox:
        return SqlOutbox(engine)

    def vault(self, engine: Engine, master_keys: MasterKeys) -> SqlVault:
        return SqlVault(engine, master_keys)

    @contextmanager
    def rewriting_events(self, conn: Connection) -> Iterator[None]:
        """Lift the events table's no-update trigger for the caller's transaction: sealing old
        events (`projections.seal`) is the one rewrite there is. SQLite (dev mode, see
        `cli.dev`) drops its trigger and makes it again, in the same transaction."""
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS events_append_only_update")
        yield
        conn.exec_driver_sql(
            "CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events "
            "BEGIN SELECT RAISE(ABORT, 'events are facts: never updated or deleted'); END"
        )

    def token_cache(self, engine: Engine) -> TokenCache | None:
        """None: without LISTEN nothing can vouch that a remembered token was not revoked."""
        return None

    def insert(self, table: Table) -> sqlite.Insert:
        """An INSERT that can take `on_conflict_do_update`: each database has its own."""
        return sqlite.insert(table)

    def upsert(self, conn: Connection, table: Table, key: str, rows: list[dict]) -> None:
        """Insert or overwrite rows by their primary key (at most one row per key)."""
        if rows:
            conn.execute(_sqlite_upsert(table, key), rows)

    def read_streams(
        self, conn: Connection, sources: Sequence[Sources], stream_ids: Sequence[uuid.UUID], lock: bool
    ) -> list[list[list[Mapping[str, Any]]]]:
        """For each group of sources, each source's rows of these streams. `lock` is ignored:
        SQLite has one writer at a time anyway."""

        def rows(table: Table, column: Column) -> list[Mapping[str, Any]]:
            return list(conn.execute(select(table).where(column.in_(stream_ids))).mappings())

        return [[rows(table, column) for table, column in group] for group in sources]

    def write_batch(
        self, conn: Connection, writes: Mapping[Table, list[dict]], applied: Collection[int], commit: bool
    ) -> None:
        """Upsert the rows and mark the `applied` events projected; the caller commits."""
        for table, rows in writes.items():
            self.upsert(conn, table, _key(table), rows)
        if applied:
            pending = projection_pending_table
            conn.execute(delete(pending).where(pending.c.position.in_(list(applied))))


class Postgres(Portable):
    """PostgreSQL: fewer round trips, and locks that let several workers and a rebuild work
    side by side."""

    migrated = True

    def event_store(self, engine: Engine, personal: SqlVault | None = None) -> PostgresEventStore:
        return PostgresEventStore(engine, personal)

    def outbox(self, engine: Engine) -> PostgresOutbox:
        return PostgresOutbox(engine)

    @contextmanager
    def rewriting_events(self, conn: Connection) -> Iterator[None]:
        """Migration 0001's trigger, off inside the caller's transaction only: disabling it
        takes a SHARE ROW EXCLUSIVE lock on the table until the commit, so no other session
        writes an event meanwhile, nor ever sees the trigger off; appends wait."""
        conn.exec_driver_sql("ALTER TABLE events DISABLE TRIGGER events_append_only")
        yield
        conn.exec_driver_sql("ALTER TABLE events ENABLE TRIGGER events_append_only")

    def token_cache(self, engine: Engine) -> TokenCache:
        return TokenCache(libpq_url(engine))

    def insert(self, table: Table) -> postgresql.Insert:
        return postgresql.insert(table)

    def upsert(self, conn: Connection, table: Table, key: str, rows: list[dict]) -> None:
        """The rows travel as one JSON document in one statement: a batch of the worker's costs
        one statement per table, not one per row."""
        if rows:
            conn.exec_driver_sql(json_upsert_sql(table, key), {"rows": json_rows(rows)})

    def read_streams(
        self, conn: Connection, sources: Sequence[Sources], stream_ids: Sequence[uuid.UUID], lock: bool
    ) -> list[list[list[Mapping[str, Any]]]]:
        """One round trip: the locks (if `lock`) and every read in one psycopg pipeline. Under
        load a round trip costs milliseconds of waiting for a CPU, so this matters."""
        driver = conn.connection.driver_connection
        streams = array_text(stream_ids)
        with driver_errors(conn.engine, driver), driver.pipeline():
            if lock:
                driver.execute(_SWAP_SHARED_SQL, (SWAP_LOCK_ID,))
                driver.execute(_STREAM_LOCKS_SQL, (streams,))
            cursors = [
                [
                    driver.cursor(row_factory=dict_row).execute(
                        rows_of_streams_sql(table, column.name), (streams,)
                    )
                    for table, column in group
                ]
                for group in sources
            ]
        return [[cursor.fetchall() for cursor in group] for group in cursors]

    def write_batch(
        self, conn: Connection, writes: Mapping[Table, list[dict]], applied: Collection[int], commit: bool
    ) -> None:
        """One round trip: the upserts, the pending rows' delete and, if `commit`, the COMMIT
        (psycopg then sees the session idle, so SQLAlchemy's own commit sends nothing)."""
        driver = conn.connection.driver_connection
        with driver_errors(conn.engine, driver), driver.pipeline():
            for table, rows in writes.items():
                if rows:
                    driver.execute(json_upsert_sql(table, _key(table)), {"rows": json_rows(rows)})
            if applied:
                driver.execute(_CLEAR_PENDING_SQL, (array_text(applied),))
            if commit:
                driver.execute("COMMIT")


PORTABLE = Portable()
POSTGRES = Postgres()


def dialect_of(bind: Engine | Connection) -> Portable:
    """The ways of the database `bind` talks to: the only place that asks which one it is."""
    return POSTGRES if bind.dialect.name == "postgresql" else PORTABLE


# --- PostgreSQL's statements ----------------------------------------------------------------

#: A batch's locks, in a fixed order (so no deadlock): shared on the swap lock (a rebuild takes
#: it exclusively to swap its tables in), then one per stream, so two workers applying the
#: same stream cannot overwrite each other's newer state.
_SWAP_SHARED_SQL = "SELECT pg_advisory_xact_lock_shared(%s)"
_STREAM_LOCKS_SQL = (
    "SELECT pg_advisory_xact_lock(hashtextextended(s::text, 0)) "
    "FROM unnest(CAST(%s AS uuid[])) AS s ORDER BY s"
)
_CLEAR_PENDING_SQL = "DELETE FROM projection_pending WHERE position = ANY(CAST(%s AS bigint[]))"

_quote = postgresql.dialect().identifier_preparer.quote


def array_text(values: Iterable[uuid.UUID | int]) -> str:
    """An array parameter (of UUIDs or integers) in PostgreSQL's text form, made once. psycopg
    dumps a list item by item in Python (1.35 us per UUID, against 0.67 for this), and a
    worker's batch sends its stream ids three times: the locks and each projection's read."""
    return "{" + ",".join(map(str, values)) + "}"


def json_rows(rows: list[dict]) -> str:
    """Rows as the JSON document `json_upsert_sql` takes. orjson writes datetimes (ISO 8601,
    with their offset) and UUIDs itself, several times faster than `json.dumps` with a
    `default`: a worker's batch sends every changed row through here."""
    return orjson.dumps(rows).decode()


@cache
def rows_of_streams_sql(table: Table, stream_column: str) -> str:
    """The table's rows of the streams in the array parameter."""
    columns = ", ".join(_quote(c.name) for c in table.columns)
    return f"SELECT {columns} FROM {_quote(table.name)} WHERE {_quote(stream_column)} = ANY(%s)"


@cache
def json_upsert_sql(table: Table, key: str) -> str:
    """Upsert the rows of the JSON document parameter `rows` by `key`."""
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


# --- SQLite's statements --------------------------------------------------------------------


@cache
def _sqlite_upsert(table: Table, key: str):
    """Built once per table: a statement with every column in its SET is costly to rebuild
    (and to compute a cache key for) on every batch."""
    stmt = sqlite.insert(table)
    return stmt.on_conflict_do_update(
        index_elements=[table.c[key]],
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name != key},
    )


def _key(table: Table) -> str:
    return table.primary_key.columns.values()[0].name
