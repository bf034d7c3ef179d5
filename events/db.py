"""The PostgreSQL engine and the event store's own tables.

Tables of the read side live in `projections.tables`; the organisations and tokens of the API
in `api.auth`. Alembic migrations (`migrations/`) create all of them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.engine import Engine, make_url

metadata = MetaData()

#: The only source of truth: append-only, never updated or deleted.
events_table = Table(
    "events",
    metadata,
    Column("position", BigInteger, Identity(always=True), primary_key=True),
    Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("stream_id", UUID(as_uuid=True), nullable=False),
    Column("stream_version", Integer, nullable=False),
    Column("type", Text, nullable=False),
    Column("schema_version", SmallInteger, nullable=False),
    Column("data", JSONB, nullable=False),
    Column("metadata", JSONB, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("stream_id", "stream_version", name="events_stream_version_key"),
)

#: Events not yet confirmed by the broker; the relay deletes a row once RabbitMQ confirmed it.
outbox_table = Table(
    "outbox",
    metadata,
    Column("position", BigInteger, ForeignKey("events.position"), primary_key=True),
)

#: Events not yet applied to the projections, per organisation: what a read waits for.
projection_pending_table = Table(
    "projection_pending",
    metadata,
    Column("position", BigInteger, primary_key=True),
    Column("org_id", Text, nullable=False),
    Column("stream_id", UUID(as_uuid=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("projection_pending_org_idx", "org_id", "position"),
    Index("projection_pending_stream_idx", "stream_id", "position"),
)

#: Uniqueness that spans streams (candidate key strings, idempotency keys), claimed in the
#: same transaction as the append that needs it.
reservations_table = Table(
    "reservations",
    metadata,
    Column("scope", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("stream_id", UUID(as_uuid=True), nullable=False),
    Column("payload", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

OUTBOX_CHANNEL = "assessments_outbox"


def make_engine(database_url: str, pool_size: int = 10) -> Engine:
    """No pre-ping: it would cost a round trip per checkout on the hot path. A connection
    found dead (after a database restart) invalidates the whole pool at once; the API answers
    that one request with a 503, the relay and the worker retry."""
    return create_engine(database_url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)


def ensure_database(database_url: str) -> bool:
    """Create the database named in the URL if it is missing, so a fresh machine needs no
    manual `createdb`. Returns whether it had to be created."""
    url = make_url(database_url)
    server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            exists = conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            )
            if not exists:
                conn.exec_driver_sql(f'CREATE DATABASE "{url.database}"')
            return not exists
    finally:
        server.dispose()


def libpq_url(engine: Engine) -> str:
    """The engine's URL for a plain psycopg connection (LISTEN, COPY, named cursors)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
