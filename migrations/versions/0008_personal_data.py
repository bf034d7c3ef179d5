"""Personal data: each data subject's key (a candidate key's: `events.personal`), and the keys
view's subject.

Events written from now on hold candidates' emails and names sealed under the subject's data
key; `assessments candidates seal` migrates older ones.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 09:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subject_keys",
        sa.Column("subject_id", sa.Uuid(), primary_key=True),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("lookup", sa.LargeBinary()),
        sa.Column("master_key_id", sa.Text(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("subject_keys_lookup_idx", "subject_keys", ["org_id", "lookup"])
    op.add_column("candidate_keys_view", sa.Column("subject_id", sa.Uuid()))
    op.create_index("candidate_keys_view_subject_idx", "candidate_keys_view", ["subject_id"])


def downgrade() -> None:
    op.drop_index("candidate_keys_view_subject_idx", "candidate_keys_view")
    op.drop_column("candidate_keys_view", "subject_id")
    op.drop_table("subject_keys")
