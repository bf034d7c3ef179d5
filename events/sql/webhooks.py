"""The webhooks' own tables and their SQL: one row per (endpoint, event) delivery, and each
endpoint's run of failures. Neither is a source of truth about endpoints (their streams are):
they are the dispatcher's work list and its log, which the API shows.

Deliveries are keyed by (endpoint, event id), so recording an event twice (a redelivered
message, `events republish`) adds nothing. A delivery is claimed with a lease
(`locked_until`) before it is sent, so two dispatchers never send it at the same time.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    and_,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine

from events.model import RecordedEvent, StoredEvent
from events.sql.dialect import dialect_of
from events.sql.engine import autocommit
from events.sql.store import to_recorded
from events.sql.tables import events_table, reservations_table
from events.sql.types import Timestamp
from events.webhooks import Delivery, endpoint_scope

metadata = MetaData()

PENDING, SUCCEEDED, FAILED, CANCELLED = "pending", "succeeded", "failed", "cancelled"

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("endpoint_id", Uuid, nullable=False),
    Column("org_id", Text, nullable=False),
    Column("event_id", Uuid, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("stream_id", Uuid, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("created_at", Timestamp, nullable=False),
    Column("next_attempt_at", Timestamp),
    Column("locked_until", Timestamp),
    Column("last_attempt_at", Timestamp),
    Column("response_status", Integer),
    Column("latency_ms", Integer),
    Column("last_error", Text),
    UniqueConstraint("endpoint_id", "event_id", name="webhook_deliveries_endpoint_event_key"),
    Index(
        "webhook_deliveries_due_idx",
        "next_attempt_at",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
    Index("webhook_deliveries_order_idx", "endpoint_id", "stream_id", "position"),
)

#: Each endpoint's current run of failed attempts; `last_success_at`: when the last run ended.
webhook_endpoint_health = Table(
    "webhook_endpoint_health",
    metadata,
    Column("endpoint_id", Uuid, primary_key=True),
    Column("consecutive_failures", Integer, nullable=False, server_default=text("0")),
    Column("failing_since", Timestamp),
    Column("last_success_at", Timestamp),
)


@dataclass(frozen=True)
class Claimed:
    """A delivery leased for one attempt, with the event it carries as stored."""

    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: uuid.UUID
    attempts: int
    stored: StoredEvent


@dataclass(frozen=True)
class Health:
    consecutive_failures: int
    failing_since: datetime | None


class SqlWebhooks:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.autocommit = autocommit(engine)
        self.dialect = dialect_of(engine)

    # --- endpoints ------------------------------------------------------------------------

    def endpoint_ids(self, org_id: str) -> list[uuid.UUID]:
        query = select(reservations_table.c.stream_id).where(
            reservations_table.c.scope == endpoint_scope(org_id)
        )
        with self.autocommit.connect() as conn:
            return list(conn.scalars(query))

    def endpoint_streams(self, org_id: str) -> dict[uuid.UUID, list[RecordedEvent]]:
        """Every event of every endpoint of the organisation, by endpoint: one query."""
        ids = select(reservations_table.c.stream_id).where(
            reservations_table.c.scope == endpoint_scope(org_id)
        )
        query = (
            select(events_table)
            .where(events_table.c.stream_id.in_(ids.scalar_subquery()))
            .order_by(events_table.c.stream_id, events_table.c.stream_version)
        )
        streams: dict[uuid.UUID, list[RecordedEvent]] = {}
        with self.autocommit.connect() as conn:
            for row in conn.execute(query):
                streams.setdefault(row.stream_id, []).append(to_recorded(row))
        return streams

    # --- recording ------------------------------------------------------------------------

    def last_positions(self, stream_id: uuid.UUID, endpoint_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """The position of the latest delivery of the stream recorded for each endpoint."""
        d = webhook_deliveries.c
        query = (
            select(d.endpoint_id, func.max(d.position))
            .where(d.stream_id == stream_id, d.endpoint_id.in_(endpoint_ids))
            .group_by(d.endpoint_id)
        )
        with self.autocommit.connect() as conn:
            return dict(conn.execute(query).all())

    def record(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert deliveries; those already recorded (same endpoint and event) are skipped.
        Returns how many are new."""
        if not rows:
            return 0
        statement = (
            self.dialect.insert(webhook_deliveries)
            .on_conflict_do_nothing(index_elements=["endpoint_id", "event_id"])
            .returning(webhook_deliveries.c.id)
        )
        with self.engine.begin() as conn:
            return len(conn.execute(statement, list(rows)).all())

    # --- sending --------------------------------------------------------------------------

    def due(
        self, now: datetime, limit: int, busy: Sequence[uuid.UUID] = ()
    ) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """(delivery, endpoint) pairs that may be attempted now, oldest first: pending, due,
        not leased, and with no earlier pending delivery of the same stream to the same
        endpoint (the per-endpoint order of an assessment's events)."""
        d = webhook_deliveries.c
        earlier = webhook_deliveries.alias("earlier")
        blocked = (
            select(earlier.c.id)
            .where(
                earlier.c.endpoint_id == d.endpoint_id,
                earlier.c.stream_id == d.stream_id,
                earlier.c.status == PENDING,
                earlier.c.position < d.position,
            )
            .exists()
        )
        query = (
            select(d.id, d.endpoint_id)
            .where(
                d.status == PENDING,
                d.next_attempt_at <= now,
                or_(d.locked_until.is_(None), d.locked_until < now),
                ~blocked,
            )
            .order_by(d.next_attempt_at, d.position)
            .limit(limit)
        )
        if busy:
            query = query.where(d.endpoint_id.not_in(busy))
        with self.autocommit.connect() as conn:
            return [(row[0], row[1]) for row in conn.execute(query)]

    def claim(self, ids: Sequence[uuid.UUID], now: datetime, lease: timedelta) -> list[Claimed]:
        """Lease these deliveries (those another dispatcher did not lease first) and return
        them with their events."""
        if not ids:
            return []
        d = webhook_deliveries.c
        with self.engine.begin() as conn:
            taken = list(
                conn.scalars(
                    update(webhook_deliveries)
                    .where(
                        d.id.in_(ids),
                        d.status == PENDING,
                        or_(d.locked_until.is_(None), d.locked_until < now),
                    )
                    .values(locked_until=now + lease)
                    .returning(d.id)
                )
            )
            if not taken:
                return []
            query = (
                select(d.id, d.endpoint_id, d.event_id, d.attempts, *events_table.c)
                .join(events_table, events_table.c.event_id == d.event_id)
                .where(d.id.in_(taken))
            )
            return [
                Claimed(
                    row.id,
                    row.endpoint_id,
                    row.event_id,
                    row.attempts,
                    StoredEvent(
                        row.position,
                        row.event_id,
                        row.stream_id,
                        row.stream_version,
                        row.type,
                        row.schema_version,
                        row.data,
                        row.metadata,
                        row.recorded_at,
                    ),
                )
                for row in conn.execute(query)
            ]

    def finish(
        self,
        delivery_id: uuid.UUID,
        endpoint_id: uuid.UUID,
        now: datetime,
        succeeded: bool,
        next_attempt_at: datetime | None,
        response_status: int | None,
        latency_ms: int | None,
        error: str | None,
    ) -> Health:
        """Record one attempt, and the endpoint's run of failures it ends or extends."""
        status = SUCCEEDED if succeeded else (PENDING if next_attempt_at is not None else FAILED)
        d = webhook_deliveries.c
        h = webhook_endpoint_health.c
        with self.engine.begin() as conn:
            conn.execute(
                update(webhook_deliveries)
                .where(d.id == delivery_id)
                .values(
                    status=status,
                    attempts=d.attempts + 1,
                    next_attempt_at=next_attempt_at,
                    locked_until=None,
                    last_attempt_at=now,
                    response_status=response_status,
                    latency_ms=latency_ms,
                    last_error=None if succeeded else (error or "")[:500],
                )
            )
            if succeeded:
                # Ends a run of failures, if there was one; most successes change nothing.
                conn.execute(
                    update(webhook_endpoint_health)
                    .where(h.endpoint_id == endpoint_id, h.consecutive_failures > 0)
                    .values(consecutive_failures=0, failing_since=None, last_success_at=now)
                )
                return Health(0, None)
            conn.execute(
                self.dialect.insert(webhook_endpoint_health)
                .values(endpoint_id=endpoint_id, consecutive_failures=1, failing_since=now)
                .on_conflict_do_update(
                    index_elements=["endpoint_id"],
                    set_={
                        "consecutive_failures": h.consecutive_failures + 1,
                        "failing_since": func.coalesce(h.failing_since, now),
                    },
                )
            )
            row = conn.execute(
                select(h.consecutive_failures, h.failing_since).where(h.endpoint_id == endpoint_id)
            ).one()
        return Health(row.consecutive_failures, row.failing_since)

    def release(self, delivery_id: uuid.UUID) -> None:
        """Give a lease back unused (the dispatcher stops)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id == delivery_id)
                .values(locked_until=None)
            )

    def cancel_pending(self, endpoint_id: uuid.UUID, reason: str) -> int:
        """Stop the pending deliveries of an endpoint that no longer receives any."""
        d = webhook_deliveries.c
        with self.engine.begin() as conn:
            return conn.execute(
                update(webhook_deliveries)
                .where(d.endpoint_id == endpoint_id, d.status == PENDING)
                .values(status=CANCELLED, next_attempt_at=None, locked_until=None, last_error=reason)
            ).rowcount

    # --- for the API ----------------------------------------------------------------------

    def deliveries(
        self, endpoint_id: uuid.UUID, limit: int, after: uuid.UUID | None
    ) -> tuple[list[Delivery], uuid.UUID | None]:
        """Newest first, paged by id (ids are time-ordered)."""
        d = webhook_deliveries.c
        query = select(webhook_deliveries).where(d.endpoint_id == endpoint_id)
        if after is not None:
            query = query.where(d.id < after)
        query = query.order_by(d.id.desc()).limit(limit + 1)
        with self.autocommit.connect() as conn:
            rows = conn.execute(query).all()
        page = [_delivery(row) for row in rows[:limit]]
        return page, (page[-1].id if len(rows) > limit else None)

    def retry(self, endpoint_id: uuid.UUID, delivery_id: uuid.UUID, now: datetime) -> Delivery | None:
        d = webhook_deliveries.c
        with self.engine.begin() as conn:
            conn.execute(
                update(webhook_deliveries)
                .where(d.id == delivery_id, d.endpoint_id == endpoint_id)
                .values(status=PENDING, next_attempt_at=now, locked_until=None)
            )
            row = conn.execute(
                select(webhook_deliveries).where(d.id == delivery_id, d.endpoint_id == endpoint_id)
            ).first()
        return None if row is None else _delivery(row)

    # --- for operators --------------------------------------------------------------------

    def backlog(self, now: datetime) -> dict[str, int]:
        d = webhook_deliveries.c
        query = select(
            func.count().filter(d.status == PENDING),
            func.count().filter(and_(d.status == PENDING, d.next_attempt_at <= now)),
        )
        with self.autocommit.connect() as conn:
            pending, due = conn.execute(query).one()
        return {"pending": pending or 0, "due": due or 0}


def _delivery(row: Any) -> Delivery:
    return Delivery(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        event_type=row.event_type,
        stream_id=row.stream_id,
        status=row.status,
        attempts=row.attempts,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        last_attempt_at=row.last_attempt_at,
        response_status=row.response_status,
        latency_ms=row.latency_ms,
        last_error=row.last_error,
    )
