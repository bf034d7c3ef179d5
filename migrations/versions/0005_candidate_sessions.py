"""Candidate sessions: the keys projection keeps each key's consent, session and expiry.

A key has at most one session, so its fields are columns of the key's row
(`events.candidate.CandidateKey`): consent, session id and deadline, the candidate's signing
key, device checks, and when the key expired. Existing rows get their defaults: no event that
sets these fields existed before this revision. The partial index serves the expiry step, which
looks for keys that ended by time but not by an event.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLE = "candidate_keys_view"
OPEN = "revoked_at IS NULL AND completed_at IS NULL AND expired_at IS NULL"
NULLABLE = [
    ("consent_version", sa.Text()),
    ("consent_hash", sa.Text()),
    ("consented_at", sa.DateTime(timezone=True)),
    ("session_id", sa.UUID()),
    ("deadline", sa.DateTime(timezone=True)),
    ("signing_public_key", sa.Text()),
    ("expired_at", sa.DateTime(timezone=True)),
    ("first_fingerprint_hash", sa.Text()),
    ("last_checkpoint", sa.Text()),
    ("last_checked_at", sa.DateTime(timezone=True)),
]


def upgrade() -> None:
    for name, kind in NULLABLE:
        op.add_column(TABLE, sa.Column(name, kind, nullable=True))
    op.add_column(TABLE, sa.Column("device_checks", sa.Integer(), nullable=False, server_default="0"))
    op.add_column(TABLE, sa.Column("device_changed", sa.Boolean(), nullable=False, server_default="false"))
    # The projection writes every column: the defaults only filled the rows already there.
    op.alter_column(TABLE, "device_checks", server_default=None)
    op.alter_column(TABLE, "device_changed", server_default=None)
    op.create_index(f"{TABLE}_session_idx", TABLE, ["session_id"], unique=True)
    op.create_index(
        f"{TABLE}_open_idx",
        TABLE,
        [sa.text("coalesce(deadline, expires_at)")],
        postgresql_where=sa.text(OPEN),
    )


def downgrade() -> None:
    op.drop_index(f"{TABLE}_open_idx", table_name=TABLE)
    op.drop_index(f"{TABLE}_session_idx", table_name=TABLE)
    for name in ["device_changed", "device_checks", *(name for name, _ in reversed(NULLABLE))]:
        op.drop_column(TABLE, name)
