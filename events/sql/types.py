"""Column types that mean the same on PostgreSQL (production) and SQLite (`assessments dev`).
Each difference is a variant of the type, chosen by SQLAlchemy per dialect."""

from __future__ import annotations

import dataclasses
import types
import typing
import uuid
from datetime import UTC, datetime

from sqlalchemy import JSON, BigInteger, Boolean, Column, DateTime, Integer, Text, TypeDecorator, Uuid
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


#: The column type of each Python type a dataclass field may have.
COLUMN_TYPES = {str: Text, int: Integer, bool: Boolean, uuid.UUID: Uuid, datetime: Timestamp}


def columns_of(cls: type, primary_key: str | None = None) -> list[Column]:
    """A column for each field of a dataclass, named like it, `NULL` allowed where the field's
    type allows `None`: a table that follows the dataclass instead of repeating it."""
    hints = typing.get_type_hints(cls)
    return [_column(f.name, hints[f.name], f.name == primary_key) for f in dataclasses.fields(cls)]


def _column(name: str, hint: typing.Any, primary_key: bool = False) -> Column:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    (kind,) = [option for option in options if option is not type(None)]
    if primary_key:
        return Column(name, COLUMN_TYPES[kind], primary_key=True)
    return Column(name, COLUMN_TYPES[kind], nullable=type(None) in options)
