"""Webhooks: the dispatcher's deliveries (one per endpoint and event) and each endpoint's run of
failures. Endpoints themselves are streams in the event store, and their signing secrets live in
reservations (scope `webhook_secret`): neither needs a table of its own.

Independent of 0006 (candidate invitations, built in parallel): it only adds tables.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 06:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("endpoint_id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("stream_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("response_status", sa.Integer()),
        sa.Column("latency_ms", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.UniqueConstraint("endpoint_id", "event_id", name="webhook_deliveries_endpoint_event_key"),
    )
    op.create_index(
        "webhook_deliveries_due_idx",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "webhook_deliveries_order_idx", "webhook_deliveries", ["endpoint_id", "stream_id", "position"]
    )
    op.create_table(
        "webhook_endpoint_health",
        sa.Column("endpoint_id", sa.Uuid(), primary_key=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("failing_since", sa.DateTime(timezone=True)),
        sa.Column("last_success_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("webhook_endpoint_health")
    op.drop_index("webhook_deliveries_order_idx", table_name="webhook_deliveries")
    op.drop_index("webhook_deliveries_due_idx", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
