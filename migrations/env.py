"""Alembic environment: the URL comes from the CLI (`assessments db upgrade`), never a file."""

from alembic import context
from sqlalchemy import engine_from_config, pool

from events.sql.auth_limits import metadata as limits_metadata
from events.sql.catalogue import metadata as catalogue_metadata
from events.sql.invitations import metadata as invitations_metadata
from events.sql.tables import metadata as store_metadata
from events.sql.tenancy import metadata as auth_metadata
from events.sql.webhooks import metadata as webhooks_metadata
from projections.tables import metadata as projection_metadata

target_metadata = [
    store_metadata,
    projection_metadata,
    auth_metadata,
    catalogue_metadata,
    limits_metadata,
    invitations_metadata,
    webhooks_metadata,
]


def run_migrations_online() -> None:
    config = context.config
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
