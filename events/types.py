"""Column types that mean the same on PostgreSQL (production) and SQLite (`assessments dev`)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, BigInteger, DateTime, Integer, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB

#: JSONB on PostgreSQL, JSON text on SQLite.
Json = JSON().with_variant(JSONB(), "postgresql")

#: A bigint identity on PostgreSQL; SQLite only auto-increments an `INTEGER PRIMARY KEY`.
Position = BigInteger().with_variant(Integer(), "sqlite")


class Timestamp(TypeDecorator):
    """Always an aware UTC datetime in Python. SQLite has no time zones, so it stores UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value
