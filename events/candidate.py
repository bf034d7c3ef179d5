"""A candidate key as its events describe it, from issue to the end of its session.

One record (`CandidateKey`) serves the `Assessment` aggregate, which decides on it, and the keys
projection, which stores it as a row (`projections.candidate_keys`). A key has at most one
session: redeeming starts it, and every later redeem of the active key resumes the same one, so
the session's fields live on the key. The key string is not here (only its reservation holds
it), and neither is any session token (only their hashes, in reservations).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from functools import singledispatch

from events.model import (
    CandidateConsented,
    CandidateDeviceChecked,
    CandidateKeyCompleted,
    CandidateKeyExpired,
    CandidateKeyIssued,
    CandidateKeyRedeemed,
    CandidateKeyRevoked,
    CandidateSessionResumed,
    Event,
)

PENDING, ACTIVE, COMPLETED, EXPIRED = "pending", "active", "completed", "expired"


@dataclass(frozen=True)
class CandidateKey:
    id: uuid.UUID
    assessment_id: uuid.UUID
    org_id: str
    candidate_email: str | None
    candidate_name: str | None
    org_name: str | None
    expires_at: datetime
    created_at: datetime
    redeemed_at: datetime | None = None
    completed_at: datetime | None = None
    revoked_at: datetime | None = None
    revoke_reason: str | None = None
    consent_version: str | None = None
    consent_hash: str | None = None
    consented_at: datetime | None = None
    session_id: uuid.UUID | None = None
    deadline: datetime | None = None
    signing_public_key: str | None = None
    expired_at: datetime | None = None
    device_checks: int = 0
    first_fingerprint_hash: str | None = None
    device_changed: bool = False
    last_checkpoint: str | None = None
    last_checked_at: datetime | None = None
    #: Whose data key seals `candidate_email` and `candidate_name` (`events.personal`); None
    #: for a key issued before sealing existed, whose fields are in clear.
    subject_id: uuid.UUID | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def redeemed(self) -> bool:
        return self.redeemed_at is not None

    @property
    def ends_at(self) -> datetime:
        """When the key stops by time alone: its session's deadline once redeemed (never later
        than `expires_at`), else `expires_at`."""
        return self.deadline if self.deadline is not None else self.expires_at

    def status_at(self, now: datetime) -> str:
        """Derived from time as well as events: a key is `expired` from the moment it ends,
        whether or not the expiry step has recorded it yet (authentication fails closed)."""
        if self.completed_at is not None:
            return COMPLETED
        if self.expired_at is not None or now >= self.ends_at:
            return EXPIRED
        return ACTIVE if self.redeemed else PENDING

    def usable_at(self, now: datetime) -> bool:
        """Whether the key still opens its assessment: not revoked, pending or active."""
        return not self.revoked and self.status_at(now) in (PENDING, ACTIVE)

    def consented_to(self, disclosure_hash: str) -> bool:
        return self.consent_hash == disclosure_hash

    def due_to_expire_at(self, now: datetime) -> bool:
        """Ended by time, and not yet recorded as expired (nor completed, nor revoked)."""
        return (
            not self.revoked and self.completed_at is None and self.expired_at is None and now >= self.ends_at
        )


def issued_key(event: CandidateKeyIssued) -> CandidateKey:
    return CandidateKey(
        id=event.key_id,
        assessment_id=event.assessment_id,
        org_id=event.org_id,
        candidate_email=event.candidate_email,
        candidate_name=event.candidate_name,
        org_name=event.org_name,
        expires_at=event.expires_at,
        created_at=event.issued_at,
        subject_id=event.subject_id,
    )


# One case per event type that changes an issued key, registered by name (see
# `events.aggregate.evolve` for why).


def _no_rule(event: Event, key: CandidateKey) -> CandidateKey:
    raise TypeError(f"CandidateKey has no rule for {type(event).__name__}")


def _revoked(event: CandidateKeyRevoked, key: CandidateKey) -> CandidateKey:
    return replace(key, revoked_at=event.revoked_at, revoke_reason=event.reason)


def _consented(event: CandidateConsented, key: CandidateKey) -> CandidateKey:
    return replace(
        key,
        consent_version=event.disclosure_version,
        consent_hash=event.disclosure_hash,
        consented_at=event.consented_at,
    )


def _redeemed(event: CandidateKeyRedeemed, key: CandidateKey) -> CandidateKey:
    return replace(
        key,
        redeemed_at=event.redeemed_at,
        session_id=event.session_id,
        deadline=event.deadline,
        signing_public_key=event.signing_public_key,
        candidate_name=key.candidate_name or event.candidate_name,
        subject_id=key.subject_id or event.subject_id,
    )


def _resumed(event: CandidateSessionResumed, key: CandidateKey) -> CandidateKey:
    return key


def _device_checked(event: CandidateDeviceChecked, key: CandidateKey) -> CandidateKey:
    return replace(
        key,
        device_checks=key.device_checks + 1,
        first_fingerprint_hash=key.first_fingerprint_hash or event.fingerprint_hash,
        device_changed=key.device_changed or event.changed,
        last_checkpoint=event.checkpoint,
        last_checked_at=event.checked_at,
    )


def _completed(event: CandidateKeyCompleted, key: CandidateKey) -> CandidateKey:
    return replace(key, completed_at=event.completed_at)


def _expired(event: CandidateKeyExpired, key: CandidateKey) -> CandidateKey:
    return replace(key, expired_at=event.expired_at)


#: An issued key after one more of its events: `evolve_key(event, key)`.
evolve_key = singledispatch(_no_rule)
evolve_key.register(CandidateKeyRevoked, _revoked)
evolve_key.register(CandidateConsented, _consented)
evolve_key.register(CandidateKeyRedeemed, _redeemed)
evolve_key.register(CandidateSessionResumed, _resumed)
evolve_key.register(CandidateDeviceChecked, _device_checked)
evolve_key.register(CandidateKeyCompleted, _completed)
evolve_key.register(CandidateKeyExpired, _expired)

#: The events that change an issued key (each has a `key_id`).
KEY_EVENTS = tuple(cls for cls in evolve_key.registry if cls is not object)
