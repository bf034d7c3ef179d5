"""The outbox as the relay reads it: what is unpublished, in order, at a cost that follows the
outbox (a handful of rows) and not the event store (which only grows); and how appends wake
the relay: only when it is idle, never too early for it to see their rows."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator

import psycopg

from events.sql.engine import driver_connection, libpq_url, make_engine
from events.sql.outbox import _ADVANCE_SQL, _UNPUBLISHED_SQL, OutboxListener, PostgresOutbox
from events.sql.tables import OUTBOX_CHANNEL, RELAY_IDLE_LOCK_ID
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


def plan_nodes(conn: psycopg.Connection, sql: str, params) -> list[dict]:
    """Every node of the statement's plan (EXPLAIN only: nothing runs)."""
    statement = psycopg.ClientCursor(conn).mogrify(sql, params)
    plan = conn.execute("EXPLAIN (FORMAT JSON) " + statement).fetchone()[0]
    pending = [(plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]]
    nodes = []
    while pending:
        node = pending.pop()
        nodes.append(node)
        pending.extend(node.get("Plans", []))
    return nodes


def assert_reads_events_only_by_position(conn: psycopg.Connection, sql: str, params) -> None:
    """The plan's shape, not its block counts (which vary with dead index entries and hint
    bits): the store is reached only through its primary key, for the positions the outbox
    named, never scanned or joined whole; so the cost follows the outbox, not the store."""
    nodes = plan_nodes(conn, sql, params)
    on_events = [node for node in nodes if node.get("Relation Name") == "events"]
    assert on_events, "the statement reads the events"
    for node in on_events:
        assert node["Node Type"] in {"Index Scan", "Bitmap Heap Scan"}, node["Node Type"]
        indexed = node if node["Node Type"] == "Index Scan" else node["Plans"][0]
        assert indexed["Index Name"] == "events_pkey"
        assert "ANY" in indexed.get("Index Cond", ""), indexed
    assert not {node["Node Type"] for node in nodes} & {"Seq Scan", "Hash Join", "Merge Join", "Nested Loop"}


def mislead_the_planner(conn: psycopg.Connection) -> None:
    """A store of 30,000 events and statistics from a moment the outbox was long, as under
    load: what misled the planner into scanning the store."""
    fill_store_directly(conn, 30_000)
    conn.execute("INSERT INTO outbox SELECT position FROM events")
    conn.execute("ANALYZE outbox")
    conn.execute("ANALYZE events")
    conn.execute("DELETE FROM outbox")


def test_reading_the_outbox_costs_what_the_outbox_holds_not_what_the_store_holds(system, service, org_id):
    outbox = PostgresOutbox(system.engine)
    with psycopg.connect(libpq_url(system.engine), autocommit=True) as conn:
        mislead_the_planner(conn)
        waiting = [create(service, org_id, f"late {n}") for n in range(3)]

        assert [e.event_id for e in outbox.unpublished(500)] == [r.event_id for r in waiting]
        assert_reads_events_only_by_position(conn, _UNPUBLISHED_SQL, (500,))


def test_advancing_removes_the_published_rows_and_reads_the_next_ones(system, service, org_id):
    outbox = PostgresOutbox(system.engine)
    recorded = [create(service, org_id, f"event {n}") for n in range(5)]
    first = outbox.advance([], 2)
    assert [e.event_id for e in first] == [r.event_id for r in recorded[:2]]

    second = outbox.advance([e.position for e in first], 2)

    assert [e.event_id for e in second] == [r.event_id for r in recorded[2:4]]
    assert [e.event_id for e in outbox.unpublished(10)] == [r.event_id for r in recorded[2:]]
    assert outbox.advance([e.position for e in second], 0) == []
    assert [e.event_id for e in outbox.unpublished(10)] == [recorded[4].event_id]


def test_advancing_costs_what_the_outbox_holds_not_what_the_store_holds(system, service, org_id):
    with psycopg.connect(libpq_url(system.engine), autocommit=True) as conn:
        mislead_the_planner(conn)
        waiting = [create(service, org_id, f"late {n}") for n in range(4)]
        outbox = PostgresOutbox(system.engine)
        published = [e.position for e in outbox.unpublished(2)]
        assert_reads_events_only_by_position(conn, _ADVANCE_SQL, {"published": published, "limit": 500})
        assert [e.event_id for e in outbox.advance(published, 500)] == [r.event_id for r in waiting[2:]]


# --- waking the relay: appends notify only an idle relay -------------------------------------


@contextlib.contextmanager
def listening(engine) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq_url(engine), autocommit=True) as conn:
        conn.execute(f"LISTEN {OUTBOX_CHANNEL}")
        yield conn


def notifications(conn: psycopg.Connection, within: float = 0.3) -> int:
    return sum(1 for _ in conn.notifies(timeout=within))


def test_appends_notify_only_while_a_relay_holds_the_idle_lock(system, service, org_id):
    idle_relay = OutboxListener(libpq_url(system.engine))
    try:
        with listening(system.engine) as conn:
            create(service, org_id)
            assert notifications(conn) == 0, "no relay is idle: nobody to wake"

            idle_relay.hold_idle_lock()
            create(service, org_id)
            assert notifications(conn) == 1

            idle_relay.release_idle_lock()
            create(service, org_id)
            assert notifications(conn) == 0, "a busy relay reads the outbox again anyway"
    finally:
        idle_relay.close()


def test_a_relay_going_idle_waits_for_the_append_in_flight_so_it_sees_its_rows(system):
    """An append that took the lock shared before the relay went idle will not notify: the
    relay must not conclude the outbox is empty before that append committed."""
    idle_relay = OutboxListener(libpq_url(system.engine))
    outbox = PostgresOutbox(system.engine)
    held = threading.Event()
    try:
        with psycopg.connect(libpq_url(system.engine)) as appender:  # a transaction, as an append is
            assert appender.execute(
                "SELECT pg_try_advisory_xact_lock_shared(%s)", (RELAY_IDLE_LOCK_ID,)
            ).fetchone()[0]
            fill_store_directly(appender, 1)
            appender.execute("INSERT INTO outbox SELECT max(position) FROM events")
            going_idle = threading.Thread(target=lambda: (idle_relay.hold_idle_lock(), held.set()))
            going_idle.start()
            assert not held.wait(0.3), "the relay went idle while an append was in flight"
            appender.commit()
            assert held.wait(5)
            going_idle.join()
        assert len(outbox.unpublished(10)) == 1
    finally:
        idle_relay.close()


def test_a_relay_under_load_is_not_woken_by_every_append(system, service, broker, org_id):
    tap = broker.tap(f"{system.settings.worker_queue}.tap")
    system.start_relay()
    with listening(system.engine) as conn:
        created = [create(service, org_id) for _ in range(200)]
        broker.take_events(tap, [r.event_id for r in created])
        woken = notifications(conn, within=0.1)
    assert 1 <= woken < 100, woken


def test_only_an_engine_made_for_harmless_writes_commits_without_waiting_for_the_flush(system):
    """The relay's (its deletes of published rows may be undone by a crash: the events are
    published again); every other engine's commits are durable."""
    relays = make_engine(system.settings.database_url, pool_size=1, autocommit=True, durable_commits=False)
    others = make_engine(system.settings.database_url, pool_size=1, autocommit=True)
    try:
        for engine, expected in ((relays, "off"), (others, "on")):
            with driver_connection(engine) as conn:
                assert conn.execute("SHOW synchronous_commit").fetchone()[0] == expected
    finally:
        relays.dispose()
        others.dispose()
