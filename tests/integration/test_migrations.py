"""The migrations build exactly the tables the code declares: a field added to the code without
its migration (or a migration without its model) fails here."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData

from events.sql import auth_limits, catalogue, invitations, tables, tenancy, webhooks
from projections import tables as read_tables


def declared() -> MetaData:
    combined = MetaData()
    for metadata in (
        tables.metadata,
        read_tables.metadata,
        tenancy.metadata,
        catalogue.metadata,
        auth_limits.metadata,
        invitations.metadata,
        webhooks.metadata,
    ):
        for table in metadata.tables.values():
            table.to_metadata(combined)
    return combined


def not_alembics_own(name, type_, _parent) -> bool:
    return not (type_ == "table" and name == "alembic_version")


def test_the_migrated_schema_is_the_declared_one(system):
    with system.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": not_alembics_own})
        assert compare_metadata(context, declared()) == []
