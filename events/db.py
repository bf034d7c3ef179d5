"""Database engines (PostgreSQL; SQLite for `assessments dev`) and the event store's tables.

Tables of the read side live in `projections.tables`; the organisations and tokens of the API
in `api.auth`. Alembic migrations (`migrations/`) create all of them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    create_engine,
    event,
    func,
    text,
)
from sqlalchemy.engine import Engine, make_url

from events.types import Json, Position, Timestamp

metadata = MetaData()

#: The only source of truth: append-only, never updated or deleted.
events_table = Table(
    "events",
    metadata,
    Column("position", Position, Identity(always=True), primary_key=True),
    Column("event_id", Uuid, nullable=False, unique=True),
    Column("stream_id", Uuid, nullable=False),
    Column("stream_version", Integer, nullable=False),
    Column("type", Text, nullable=False),
    Column("schema_version", SmallInteger, nullable=False),
    Column("data", Json, nullable=False),
    Column("metadata", Json, nullable=False),
    Column("recorded_at", Timestamp, nullable=False, server_default=func.now()),
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
    Column("stream_id", Uuid, nullable=False),
    Column("recorded_at", Timestamp, nullable=False, server_default=func.now()),
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
    Column("stream_id", Uuid, nullable=False),
    Column("payload", Json, nullable=False, server_default=text("'{}'")),
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
)

OUTBOX_CHANNEL = "assessments_outbox"


def make_engine(database_url: str, pool_size: int = 10) -> Engine:
    if database_url.startswith("sqlite"):
        return _sqlite_engine(database_url)
    return _postgres_engine(database_url, pool_size)


def _postgres_engine(database_url: str, pool_size: int) -> Engine:
    """No pre-ping: it would cost a round trip per checkout on the hot path. A connection
    found dead (after a database restart) invalidates the whole pool at once; the API answers
    that one request with a 503, the relay and the worker retry."""
    return create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        hide_parameters=True,  # errors must not quote parameters: they may hold candidate keys
        connect_args={"connect_timeout": 5},  # an unreachable host fails fast (readiness, CLI)
    )


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


def _sqlite_engine(database_url: str) -> Engine:
    """SQLite for `assessments dev`: WAL so readers never block the writer, a busy timeout
    instead of "database is locked", and write transactions that take the lock up front
    (BEGIN IMMEDIATE) so two of them cannot deadlock upgrading a read lock."""
    engine = create_engine(database_url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy, not the driver, starts transactions
        for pragma in ("journal_mode=WAL", "busy_timeout=30000", "synchronous=NORMAL"):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        if conn.get_isolation_level() != "AUTOCOMMIT":
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def is_embedded(database_url: str) -> bool:
    return database_url.startswith("sqlite")
