"""Failed candidate authentications per client and window, shared by every API process.

A new table only: processes of the previous release run beside it unchanged (they neither
read nor write it), so this revision may be applied before or during a rolling upgrade.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "candidate_auth_failures",
        sa.Column("client", sa.Text(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("client", "window_start"),
    )


def downgrade() -> None:
    op.drop_table("candidate_auth_failures")
