"""The event store's tables: the events (the only truth), the outbox, the pending
projection work, and the reservations of values unique across streams. Tables of the read side
live in `projections.tables`, the catalogue's and the organisations' beside their adapters
(`events.sql.catalogue`, `events.sql.tenancy`). Alembic migrations (`migrations/`) create all
of them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)

from events.sql.types import Json, Position, Timestamp

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
#: same transaction as the append that needs it. A candidate key's row is also the only place
#: its string is kept (found by `subject_id`, the key's id): events hold only a hint of it.
reservations_table = Table(
    "reservations",
    metadata,
    Column("scope", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("stream_id", Uuid, nullable=False),
    Column("payload", Json, nullable=False, server_default=text("'{}'")),
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
    Column("subject_id", Uuid),
    Index(
        "reservations_subject_idx",
        "subject_id",
        unique=True,
        postgresql_where=text("subject_id IS NOT NULL"),
        sqlite_where=text("subject_id IS NOT NULL"),
    ),
)

OUTBOX_CHANNEL = "assessments_outbox"
#: Held (exclusively) by the active relay while it is idle and waits on OUTBOX_CHANNEL. An
#: append notifies only when it cannot take this lock shared: a busy relay reads the outbox
#: again after every batch anyway, and each notification wakes every listening session of the
#: database. The append keeps the shared lock until its commit, so a relay going idle waits
#: for the appends in flight and then sees their rows; no wake-up is lost.
RELAY_IDLE_LOCK_ID = 0x72656C79  # "rely"
#: Taken shared by every transaction that applies events to the projections, and exclusively by
#: a rebuild while it swaps its fresh tables in, so no worker writes to a table being replaced.
SWAP_LOCK_ID = 0x70726F6A  # "proj"

#: One data key per data subject, a candidate key (`events.personal`), wrapped by a master key.
#: Deleting a row is the erasure: everything sealed under the key becomes unreadable. `lookup`
#: finds the keys of an email without keeping the email (a SHA-256 of the organisation and the
#: normalised address; it goes with the row); null for a key issued without one.
subject_keys_table = Table(
    "subject_keys",
    metadata,
    Column("subject_id", Uuid, primary_key=True),
    Column("org_id", Text, nullable=False),
    Column("lookup", LargeBinary),
    Column("master_key_id", Text, nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
    Index("subject_keys_lookup_idx", "org_id", "lookup"),
)
