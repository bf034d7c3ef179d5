"""Invitations by email: the rules, apart from SMTP and SQL (standard library only).

Which issued keys get a mail, what a mail says, how a failed send is told apart (tried again
or given up), and when the next attempt is due. The notifier (`worker.notifier`) applies
these rules; the invitations table (`events.sql.invitations`) records each key's progress.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from events.aggregate import Assessment
from events.candidate import ACTIVE, COMPLETED, EXPIRED, CandidateKey

# --- the states of an invitation (one row per key with an email) -----------------------------

#: Recorded, waiting for a notifier (at first, or for its next attempt after a failure).
PENDING = "pending"
#: A notifier took it and is sending; after the lease, another may take it again.
CLAIMED = "claimed"
#: The SMTP server accepted the mail.
SENT = "sent"
#: Not mailed: the key or its assessment was no longer usable when its turn came.
SKIPPED = "skipped"
#: Never to be sent: refused permanently, or given up after too many attempts.
FAILED = "failed"

# --- why a key is not mailed ----------------------------------------------------------------

ASSESSMENT_DELETED = "assessment_deleted"
KEY_REVOKED = "key_revoked"
KEY_EXPIRED = "key_expired"
KEY_USED = "key_used"
KEY_UNKNOWN = "key_unknown"
#: The candidate was erased (`events.personal`): there is no address to mail any more.
CANDIDATE_ERASED = "candidate_erased"

FIRST_RETRY_SECONDS = 2.0
MAX_RETRY_SECONDS = 300.0


@dataclass(frozen=True)
class Invitation:
    """What one mail says, from the key's event, its assessment and its reservation."""

    key_id: uuid.UUID
    key: str
    candidate_email: str
    candidate_name: str | None
    org_name: str | None
    title: str
    role: str
    time_limit_minutes: int | None
    expires_at: datetime


def why_not_mailed(state: Assessment, key_id: uuid.UUID, now: datetime) -> str | None:
    """None when the key should be mailed now; otherwise the reason it is skipped.

    A deleted assessment or a revoked key is never mailed, whatever else holds; neither is a
    key that expired or that its candidate already redeemed (they have it already)."""
    if not state.exists:
        return ASSESSMENT_DELETED
    key = state.keys.get(key_id)
    if key is None:
        return KEY_UNKNOWN
    if key.revoked:
        return KEY_REVOKED
    status = key.status_at(now)
    if status == EXPIRED:
        return KEY_EXPIRED
    if status in (ACTIVE, COMPLETED):
        return KEY_USED
    return None


def invitation(state: Assessment, issued: CandidateKey, key: str, org_name: str | None) -> Invitation:
    """The mail of a key `why_not_mailed` let through, `issued` its record with the email and
    name revealed. `org_name`: the key's own, else the organisation's."""
    key_id = issued.id
    created = state.created
    assert created is not None and issued.candidate_email is not None
    return Invitation(
        key_id=key_id,
        key=key,
        candidate_email=issued.candidate_email,
        candidate_name=issued.candidate_name,
        org_name=issued.org_name or org_name,
        title=created.title,
        role=created.role,
        time_limit_minutes=created.time_limit_minutes,
        expires_at=issued.expires_at,
    )


def message_id(key_id: uuid.UUID, mail_from: str) -> str:
    """The same `Message-ID` on every attempt for one key, so that the one duplicate SMTP can
    cause (a notifier dying after the server accepted, before the send was recorded) is
    recognisable as such by mail systems and readers."""
    domain = mail_from.rpartition("@")[2].strip(" >") or "localhost"
    return f"<invitation-{key_id}@{domain}>"


def is_permanent(smtp_code: int | None) -> bool:
    """A 5xx reply (e.g. 550, no such mailbox) will be the same next time: give up. A 4xx
    reply, or no reply at all (a refused connection, a timeout), may heal: try again."""
    return smtp_code is not None and 500 <= smtp_code < 600


def retry_delay(attempts: int) -> timedelta:
    """Capped exponential backoff after the `attempts`-th failed attempt: 2 s, 4 s, 8 s, ...
    up to 5 minutes."""
    exponent = max(0, min(attempts - 1, 16))
    return timedelta(seconds=min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2**exponent))
