"""The outbox as the relay sees it: what is unpublished, and marking it published.

`OutboxListener` holds the one session that LISTENs for new rows and the advisory lock that
makes a single relay active at a time (others wait as hot standbys), which keeps publishing in
position order without any coordination beyond PostgreSQL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import psycopg
from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine

from events.db import OUTBOX_CHANNEL, autocommit, events_table, libpq_url, outbox_table
from events.model import RecordedEvent
from events.store import to_recorded

RELAY_LOCK_ID = 0x61737365  # "asse": any constant shared by all relays of one database


class SqlOutbox:
    """The outbox on any SQLAlchemy database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Single statements need no BEGIN/COMMIT round trips around them.
        self.autocommit = autocommit(engine)

    def unpublished(self, limit: int) -> list[RecordedEvent]:
        """The oldest unpublished events. Read from the head every time: a transaction that
        committed late with a lower position is still picked up."""
        query = (
            select(events_table)
            .join(outbox_table, outbox_table.c.position == events_table.c.position)
            .order_by(outbox_table.c.position)
            .limit(limit)
        )
        with self.autocommit.connect() as conn:
            return [to_recorded(row) for row in conn.execute(query)]

    def mark_published(self, positions: Sequence[int]) -> None:
        if not positions:
            return
        with self.autocommit.connect() as conn:
            conn.execute(delete(outbox_table).where(outbox_table.c.position.in_(positions)))

    def backlog(self) -> int:
        with self.autocommit.connect() as conn:
            return conn.scalar(select(func.count()).select_from(outbox_table)) or 0


class PostgresOutbox(SqlOutbox):
    def listener(self) -> OutboxListener:
        return OutboxListener(libpq_url(self.engine))


class OutboxListener:
    """A dedicated session: LISTEN for appends and hold the relay's leadership lock."""

    def __init__(self, conninfo: str) -> None:
        self._conn = psycopg.connect(conninfo, autocommit=True)

    def try_lead(self) -> bool:
        acquired = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK_ID,)).fetchone()
        if acquired and acquired[0]:
            self._conn.execute(f"LISTEN {OUTBOX_CHANNEL}")
            return True
        return False

    def fileno(self) -> int:
        return self._conn.fileno()

    def drain(self) -> int:
        """Consume the notifications that arrived; raises if the session is gone."""
        return sum(1 for _ in self._conn.notifies(timeout=0))

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._conn.close()
