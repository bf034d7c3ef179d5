"""Tell the API processes when a reviewer token changes, so they may keep tokens in memory.

Any UPDATE, DELETE or TRUNCATE of api_tokens (the CLI's revoke, or an operator's own SQL)
notifies the channel `assessments_tokens` in the same transaction; every API process listens
and forgets the tokens it holds (see `api.token_cache`).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 20:10:00.000000
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE FUNCTION api_tokens_changed() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_notify('assessments_tokens', ''); RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER api_tokens_changed AFTER UPDATE OR DELETE OR TRUNCATE ON api_tokens "
        "FOR EACH STATEMENT EXECUTE FUNCTION api_tokens_changed()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER api_tokens_changed ON api_tokens")
    op.execute("DROP FUNCTION api_tokens_changed()")
