"""The outbox as the relay sees it: what is unpublished, and marking it published.

`OutboxListener` holds the one session that LISTENs for new rows, the advisory lock that
makes a single relay active at a time (others wait as hot standbys), which keeps publishing in
position order without any coordination beyond PostgreSQL, and the idle lock that tells the
appends whether a notification is wanted (`events.sql.tables.RELAY_IDLE_LOCK_ID`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import orjson
import psycopg
from psycopg.types.json import set_json_loads
from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine

from events.model import StoredEvent
from events.sql.engine import autocommit, driver_connection, libpq_url
from events.sql.tables import OUTBOX_CHANNEL, RELAY_IDLE_LOCK_ID, events_table, outbox_table

RELAY_LOCK_ID = 0x61737365  # "asse": any constant shared by all relays of one database

#: The columns of `StoredEvent`, in its order.
_STORED_COLUMNS = (
    "position",
    "event_id",
    "stream_id",
    "stream_version",
    "type",
    "schema_version",
    "data",
    "metadata",
    "recorded_at",
)
#: The oldest outbox rows first, then their events by index lookups. A plain join lets the
#: planner, misled by the outbox's churn, merge- or hash-join against the whole events table:
#: seen taking 16 ms for 28 rows after 30,000 events, and growing with the store.
_UNPUBLISHED_SQL = f"""
    SELECT {", ".join(_STORED_COLUMNS)} FROM events
    WHERE position = ANY(ARRAY(SELECT position FROM outbox ORDER BY position LIMIT %s))
    ORDER BY position
    """
_MARK_PUBLISHED_SQL = "DELETE FROM outbox WHERE position = ANY(CAST(%s AS bigint[]))"
#: Both in one statement. The SELECT reads the snapshot from before the DELETE, so it leaves
#: the deleted rows out itself.
_ADVANCE_SQL = f"""
    WITH published AS (DELETE FROM outbox WHERE position = ANY(CAST(%(published)s AS bigint[])))
    SELECT {", ".join(_STORED_COLUMNS)} FROM events
    WHERE position = ANY(ARRAY(
        SELECT position FROM outbox WHERE position <> ALL(CAST(%(published)s AS bigint[]))
        ORDER BY position LIMIT %(limit)s
    ))
    ORDER BY position
    """


class SqlOutbox:
    """The outbox on any SQLAlchemy database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Single statements need no BEGIN/COMMIT round trips around them.
        self.autocommit = autocommit(engine)

    def unpublished(self, limit: int) -> list[StoredEvent]:
        """The oldest unpublished events, as stored. Read from the head every time: a
        transaction that committed late with a lower position is still picked up."""
        query = (
            select(*(events_table.c[name] for name in _STORED_COLUMNS))
            .join(outbox_table, outbox_table.c.position == events_table.c.position)
            .order_by(outbox_table.c.position)
            .limit(limit)
        )
        with self.autocommit.connect() as conn:
            return [StoredEvent(*row) for row in conn.execute(query)]

    def mark_published(self, positions: Sequence[int]) -> None:
        if not positions:
            return
        with self.autocommit.connect() as conn:
            conn.execute(delete(outbox_table).where(outbox_table.c.position.in_(positions)))

    def advance(self, published: Sequence[int], limit: int) -> list[StoredEvent]:
        """Remove the `published` rows, then read up to `limit` unpublished ones."""
        self.mark_published(published)
        return self.unpublished(limit) if limit else []

    def backlog(self) -> int:
        with self.autocommit.connect() as conn:
            return conn.scalar(select(func.count()).select_from(outbox_table)) or 0


class PostgresOutbox(SqlOutbox):
    """The same queries as static SQL on the bare driver connection: the relay runs them for
    every batch (see `events.sql.engine.driver_connection`)."""

    def unpublished(self, limit: int) -> list[StoredEvent]:
        with driver_connection(self.engine) as conn:
            return _stored_events(conn, _UNPUBLISHED_SQL, (limit,))

    def mark_published(self, positions: Sequence[int]) -> None:
        if positions:
            with driver_connection(self.engine) as conn:
                conn.execute(_MARK_PUBLISHED_SQL, (list(positions),))

    def advance(self, published: Sequence[int], limit: int) -> list[StoredEvent]:
        """One round trip instead of two: the relay does this after every batch."""
        if not published or not limit:
            return super().advance(published, limit)
        with driver_connection(self.engine) as conn:
            return _stored_events(conn, _ADVANCE_SQL, {"published": list(published), "limit": limit})

    def listener(self) -> OutboxListener:
        return OutboxListener(libpq_url(self.engine))


def _stored_events(conn: psycopg.Connection, sql: str, params: object) -> list[StoredEvent]:
    """The rows as `StoredEvent`s, their JSON parsed by orjson: the standard library's
    parser took a fifth of the relay's CPU on a backlog (two documents per event)."""
    cursor = conn.cursor()
    set_json_loads(orjson.loads, cursor)
    return [StoredEvent(*row) for row in cursor.execute(sql, params)]


class OutboxListener:
    """A dedicated session: the relay's leadership lock, its idle lock, and LISTEN for the
    appends that find it idle."""

    def __init__(self, conninfo: str) -> None:
        self._conn = psycopg.connect(conninfo, autocommit=True, application_name="assessments-relay")
        # Taking the idle lock waits for appends in flight, which take milliseconds; a wait
        # longer than this means something is stuck, and the relay starts over.
        self._conn.execute("SET lock_timeout = '5s'")

    def try_lead(self) -> bool:
        acquired = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK_ID,)).fetchone()
        if acquired and acquired[0]:
            self._conn.execute(f"LISTEN {OUTBOX_CHANNEL}")
            return True
        return False

    def fileno(self) -> int:
        return self._conn.fileno()

    def hold_idle_lock(self) -> None:
        """Ask appends to notify from now on. Waits for the appends in flight (they hold the
        lock shared until they commit): read the outbox once more after this returns."""
        self._conn.execute("SELECT pg_advisory_lock(%s)", (RELAY_IDLE_LOCK_ID,))

    def release_idle_lock(self) -> None:
        self._conn.execute("SELECT pg_advisory_unlock(%s)", (RELAY_IDLE_LOCK_ID,))

    def drain(self) -> int:
        """Consume the notifications that arrived; raises if the session is gone."""
        return sum(1 for _ in self._conn.notifies(timeout=0))

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._conn.close()
