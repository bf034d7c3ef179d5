"""Candidate key strings are kept only in their reservations.

`CandidateKeyIssued` version 3 carries the key's hint instead of the key (a credential that
every consumer of the exchange received), so the service finds a key's string through its
reservation, by the key's id: `reservations.subject_id`, filled here for the keys issued
before (from their version 1 and 2 events, which the store never rewrites), with a unique
index for that lookup. The keys projection drops its copy of the strings.

Deploy the code of this revision with it: processes of an older release write key strings
into the projection, and reservations without the key's id (whose keys then do not
authenticate: the service fails closed).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("reservations", sa.Column("subject_id", sa.UUID(), nullable=True))
    op.execute(
        "UPDATE reservations r SET subject_id = (e.data->>'keyId')::uuid "
        "FROM events e "
        "WHERE r.scope = 'candidate_key' AND e.type = 'CandidateKeyIssued' AND e.schema_version < 3 "
        "AND e.stream_id = r.stream_id AND e.data->>'key' = r.key"
    )
    op.create_index(
        "reservations_subject_idx",
        "reservations",
        ["subject_id"],
        unique=True,
        postgresql_where=sa.text("subject_id IS NOT NULL"),
    )
    op.drop_column("candidate_keys_view", "key")


def downgrade() -> None:
    op.add_column("candidate_keys_view", sa.Column("key", sa.Text(), nullable=True))
    op.execute(
        "UPDATE candidate_keys_view v SET key = r.key FROM reservations r "
        "WHERE r.scope = 'candidate_key' AND r.subject_id = v.id"
    )
    op.alter_column("candidate_keys_view", "key", nullable=False)
    op.drop_index("reservations_subject_idx", table_name="reservations")
    op.drop_column("reservations", "subject_id")
