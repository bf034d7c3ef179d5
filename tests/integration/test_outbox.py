"""The outbox as the relay reads it: what is unpublished, in order, at a cost that follows the
outbox (a handful of rows) and not the event store (which only grows)."""

from __future__ import annotations

import json

import psycopg

from events.db import libpq_url
from events.outbox import _UNPUBLISHED_SQL, PostgresOutbox
from tests.integration.helpers import create


def fill_store_directly(conn: psycopg.Connection, count: int) -> None:
    """`count` published events (no outbox rows), written in one statement: as many as a
    store holds after a while, without a while."""
    conn.execute(
        "INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, data, metadata) "
        "SELECT gen_random_uuid(), gen_random_uuid(), 1, 'AssessmentDeleted', 1, '{}', '{}' "
        "FROM generate_series(1, %s)",
        (count,),
    )


def blocks_read(conn: psycopg.Connection, limit: int) -> int:
    plan = conn.execute(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + _UNPUBLISHED_SQL.replace("%s", str(limit))
    ).fetchone()[0]
    top = (plan if isinstance(plan, list) else json.loads(plan))[0]
    return top["Plan"]["Shared Hit Blocks"] + top["Plan"]["Shared Read Blocks"]


def test_reading_the_outbox_costs_what_the_outbox_holds_not_what_the_store_holds(system, service, org_id):
    outbox = PostgresOutbox(system.engine)
    with psycopg.connect(libpq_url(system.engine), autocommit=True) as conn:
        fill_store_directly(conn, 30_000)
        # Statistics from a moment the outbox was long, as under load: what misled the planner.
        conn.execute("INSERT INTO outbox SELECT position FROM events")
        conn.execute("ANALYZE outbox")
        conn.execute("ANALYZE events")
        conn.execute("DELETE FROM outbox")
        waiting = [create(service, org_id, f"late {n}") for n in range(3)]

        assert [e.event_id for e in outbox.unpublished(500)] == [r.event_id for r in waiting]
        # The outbox's index (dead entries included, until a vacuum) and three events' pages;
        # a join that scans the store reads all of its pages.
        store_pages = conn.execute("SELECT relpages FROM pg_class WHERE relname = 'events'").fetchone()[0]
        assert blocks_read(conn, 500) < store_pages / 4
