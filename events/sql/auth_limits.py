"""Failed candidate authentications per client, counted in the database: every API process
sees the same counts, so a client cannot try its limit once against each process (or each
gunicorn worker) behind the load balancer. Candidate keys are short secrets; this is what keeps
guessing them slow."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, Integer, MetaData, Table, Text, bindparam, delete, select
from sqlalchemy.engine import Engine

from events.model import utcnow
from events.sql.dialect import dialect_of
from events.sql.types import Timestamp

metadata = MetaData()

#: One row per client and window it failed in; `purge` deletes the windows long over.
candidate_auth_failures = Table(
    "candidate_auth_failures",
    metadata,
    Column("client", Text, primary_key=True),
    Column("window_start", Timestamp, primary_key=True),
    Column("failures", Integer, nullable=False),
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class AuthLimiter:
    """At most `limit` failed authentications per client in each window of `window_seconds`;
    past that the client is refused until the window ends, whatever it sends.

    Windows are fixed and aligned on the epoch, so every process agrees which window a moment
    falls in without asking the database, and a client's window is one row, read by its primary
    key. The check (`retry_after`) and the count (`record_failure`) are separate statements:
    attempts that pass the check together can overshoot the limit by as many as are in flight,
    but every failure is counted exactly (one upsert each)."""

    def __init__(
        self, engine: Engine, limit: int, window_seconds: int, clock: Callable[[], datetime] = utcnow
    ) -> None:
        if limit < 1 or window_seconds < 1:
            raise ValueError("the limit and the window must be at least 1")
        self.engine = engine
        self.limit = limit
        self.window = timedelta(seconds=window_seconds)
        self.clock = clock
        table = candidate_auth_failures
        self._read = select(table.c.failures).where(
            table.c.client == bindparam("client"), table.c.window_start == bindparam("window_start")
        )
        insert = dialect_of(engine).insert(table)
        self._count = insert.values(
            client=bindparam("client"), window_start=bindparam("window_start"), failures=1
        ).on_conflict_do_update(
            index_elements=[table.c.client, table.c.window_start],
            set_={"failures": table.c.failures + 1},
        )

    def window_start(self, now: datetime) -> datetime:
        return _EPOCH + (now - _EPOCH) // self.window * self.window

    def retry_after(self, client: str) -> int | None:
        """None while `client` may try; else the whole seconds (at least 1) until its window
        ends."""
        now = self.clock()
        start = self.window_start(now)
        with self.engine.connect() as conn:
            failures = conn.scalar(self._read, {"client": client, "window_start": start})
        if failures is None or failures < self.limit:
            return None
        return max(1, math.ceil((start + self.window - now).total_seconds()))

    def record_failure(self, client: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(self._count, {"client": client, "window_start": self.window_start(self.clock())})

    def purge(self, older_than: datetime | None = None) -> int:
        """Delete the windows that ended before `older_than`; by default those that ended a
        whole window ago or more: the margin keeps the current window of a process whose clock
        is behind this one's. Returns how many were deleted."""
        cut = (older_than or self.clock() - self.window) - self.window
        table = candidate_auth_failures
        with self.engine.begin() as conn:
            return conn.execute(delete(table).where(table.c.window_start <= cut)).rowcount
