"""Column types that mean the same on PostgreSQL (production) and SQLite (`assessments dev`).
Each difference is a variant of the type, chosen by SQLAlchemy per dialect."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, BigInteger, DateTime, Integer, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB

#: JSONB on PostgreSQL, JSON text on SQLite.
Json = JSON().with_variant(JSONB(), "postgresql")

#: A bigint identity on PostgreSQL; SQLite only auto-increments an `INTEGER PRIMARY KEY`.
Position = BigInteger().with_variant(Integer(), "sqlite")


class _UtcWallTime(TypeDecorator):
    """SQLite has no time zones: it keeps the UTC wall time, read back as an aware UTC time."""

    impl = DateTime()
    cache_ok = True

    def process_bind_param(self, value: datetime | None, _dialect) -> datetime | None:
        return None if value is None else value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, _dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


#: Always an aware UTC datetime in Python: `timestamptz` on PostgreSQL, UTC wall time on SQLite.
Timestamp = DateTime(timezone=True).with_variant(_UtcWallTime(), "sqlite")
