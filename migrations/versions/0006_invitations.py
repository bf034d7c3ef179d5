"""Invitations: one row per issued key with an email, recording its mail (`assessments notifier`).

A new table only: processes of the previous release run beside it unchanged, so this revision
may be applied before or during a rolling upgrade. Keys issued before it are not in the table;
`events republish --routing-key candidate_key.issued --queue assessments.notifier` mails those
still pending (the table then keeps it at one mail per key).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 06:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invitations",
        sa.Column("key_id", sa.Uuid(), nullable=False),
        sa.Column("assessment_id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim_token", sa.Uuid(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_index(
        "invitations_due_idx",
        "invitations",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "invitations_claimed_idx",
        "invitations",
        ["claimed_at"],
        postgresql_where=sa.text("status = 'claimed'"),
    )
    op.create_index(
        "invitations_failed_idx", "invitations", ["key_id"], postgresql_where=sa.text("status = 'failed'")
    )


def downgrade() -> None:
    op.drop_index("invitations_failed_idx", table_name="invitations")
    op.drop_index("invitations_claimed_idx", table_name="invitations")
    op.drop_index("invitations_due_idx", table_name="invitations")
    op.drop_table("invitations")
