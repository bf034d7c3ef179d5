"""The `Assessment` aggregate: state folded from its stream, and commands that decide events.

Commands never write: they check the rules against the current state and return the events
that record the decision. The store appends them with the version the state was read at, so
two decisions taken on the same state cannot both land.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import singledispatch
from types import MappingProxyType

from events.candidate import ACTIVE, KEY_EVENTS, PENDING, CandidateKey, evolve_key, issued_key
from events.disclosure import Disclosure
from events.keys import key_hint
from events.model import (
    DEADLINE_PASSED,
    KEY_EXPIRED,
    AssessmentCreated,
    AssessmentDeleted,
    AssessmentDetails,
    CandidateConsented,
    CandidateDeviceChecked,
    CandidateKeyCompleted,
    CandidateKeyExpired,
    CandidateKeyIssued,
    CandidateKeyRedeemed,
    CandidateKeyRevoked,
    CandidateSessionResumed,
    Event,
    details_of,
)

REVOKED_BY_REVIEWER = "revoked"
REVOKED_BY_CASCADE = "assessment_deleted"


class DomainError(Exception):
    """A command refused by the rules; the API turns each subclass into a 4xx."""


class AssessmentNotFound(DomainError):
    pass


class AssessmentAlreadyExists(DomainError):
    pass


class AssessmentAlreadyDeleted(AssessmentNotFound):
    pass


class KeyNotFound(DomainError):
    pass


# --- what a candidate may do: refusals ---------------------------------------------------------


class CandidateRefused(DomainError):
    """The key (or session token) does not open anything: unknown, revoked, expired, of a
    deleted assessment, or not for what it was presented for. One answer for all, so a caller
    learns nothing about which."""


class ConsentRequired(DomainError):
    """A pending key is redeemed before its candidate consented to the current disclosure."""


class DisclosureOutdated(DomainError):
    """A consent to a disclosure hash that is not the current disclosure's."""


class KeyAlreadyCompleted(DomainError):
    """The key's session is over: it was completed."""


class KeyNotRedeemed(DomainError):
    """Completing a key whose session never started."""


class DeadlinePassed(DomainError):
    """Completing a session after its deadline."""


@dataclass(frozen=True)
class NewKey:
    """A key the caller generated (and reserved) and wants issued. Its string goes into the
    reservation, never into the event: the event gets its hint."""

    key_id: uuid.UUID
    key: str
    candidate_email: str | None = None
    candidate_name: str | None = None
    #: Whose data key will seal the email and name (`events.personal`).
    subject_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Assessment:
    id: uuid.UUID
    version: int = 0
    created: AssessmentCreated | None = None
    deleted: bool = False
    keys: Mapping[uuid.UUID, CandidateKey] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def exists(self) -> bool:
        return self.created is not None and not self.deleted

    @property
    def org_id(self) -> str | None:
        return self.created.org_id if self.created else None

    def owned_by(self, org_id: str) -> bool:
        return self.exists and self.org_id == org_id


#: An event about one key: it is folded into `Assessment.keys`.
KeyEvent = (
    CandidateKeyIssued
    | CandidateKeyRevoked
    | CandidateConsented
    | CandidateKeyRedeemed
    | CandidateSessionResumed
    | CandidateDeviceChecked
    | CandidateKeyCompleted
    | CandidateKeyExpired
)


# --- state is a fold --------------------------------------------------------------------


def rebuild(stream_id: uuid.UUID, events: Iterable[Event]) -> Assessment:
    return advanced(Assessment(id=stream_id), events)


def advanced(state: Assessment, events: Iterable[Event]) -> Assessment:
    """The state after more events (those a command just decided and the store appended).

    Key events go into one working mapping, frozen once at the end. Folding each through
    `evolve` copies the mapping per event, which made loading an assessment quadratic in its
    keys: about 0.1 s at 1,000 keys, nearly a second at 3,000, on every command that loads it
    (`bench/fold.py`)."""
    keys = dict(state.keys)
    version = state.version
    for event in events:
        if isinstance(event, _KEY_EVENT_TYPES):
            keys[event.key_id] = _key_after(event, keys)
        else:
            state = evolve(event, state)
        version += 1
    return replace(state, version=version, keys=MappingProxyType(keys))


# One case per event type, registered by name rather than by decorator: plain functions that
# mutation testing reaches too (mutmut leaves decorated functions alone).


def _no_rule(event: Event, state: Assessment) -> Assessment:
    raise TypeError(f"Assessment has no rule for {type(event).__name__}")


def _created(event: AssessmentCreated, state: Assessment) -> Assessment:
    return replace(state, created=event)


def _deleted(event: AssessmentDeleted, state: Assessment) -> Assessment:
    return replace(state, deleted=True)


def _key_event(event: KeyEvent, state: Assessment) -> Assessment:
    """A key issued, or any later event of one (revoked, consented, redeemed, ...)."""
    return replace(state, keys=MappingProxyType({**state.keys, event.key_id: _key_after(event, state.keys)}))


def _key_after(event: KeyEvent, keys: Mapping[uuid.UUID, CandidateKey]) -> CandidateKey:
    """The key `event` is about, after it."""
    if isinstance(event, CandidateKeyIssued):
        return issued_key(event)
    return evolve_key(event, keys[event.key_id])


_KEY_EVENT_TYPES = (CandidateKeyIssued, *KEY_EVENTS)

#: The state after one event: `evolve(event, state)`.
evolve = singledispatch(_no_rule)
evolve.register(AssessmentCreated, _created)
evolve.register(AssessmentDeleted, _deleted)
for _type in _KEY_EVENT_TYPES:
    evolve.register(_type, _key_event)


# --- commands ---------------------------------------------------------------------------


def create(state: Assessment, org_id: str, details: AssessmentDetails, now: datetime) -> list[Event]:
    if state.created is not None:
        raise AssessmentAlreadyExists(str(state.id))
    return [AssessmentCreated(assessment_id=state.id, org_id=org_id, **details_of(details), created_at=now)]


def delete(state: Assessment, now: datetime) -> list[Event]:
    _require_active(state)
    return [AssessmentDeleted(assessment_id=state.id, org_id=state.org_id, deleted_at=now)]


def issue_keys(
    state: Assessment, keys: Iterable[NewKey], now: datetime, org_name: str | None = None
) -> list[Event]:
    """Issue keys that expire `expires_in_days` after now; refused once deleted."""
    created = _require_active(state)
    expires_at = now + timedelta(days=created.expires_in_days)
    return [
        CandidateKeyIssued(
            key_id=key.key_id,
            assessment_id=state.id,
            org_id=created.org_id,
            key_hint=key_hint(key.key),
            candidate_email=key.candidate_email,
            candidate_name=key.candidate_name,
            org_name=org_name,
            expires_at=expires_at,
            issued_at=now,
            subject_id=key.subject_id,
        )
        for key in keys
    ]


def revoke_key(state: Assessment, key_id: uuid.UUID, now: datetime) -> list[Event]:
    _require_active(state)
    key = state.keys.get(key_id)
    if key is None or key.revoked:
        raise KeyNotFound(str(key_id))
    return [_revoked(state, key_id, REVOKED_BY_REVIEWER, now)]


def revoke_keys_of_deleted(state: Assessment, now: datetime) -> list[Event]:
    """The cascade of a deletion: revoke every key not yet revoked. Running it again on the
    resulting state decides nothing, which is what makes the worker's cascade idempotent."""
    if not state.deleted:
        return []
    return [
        _revoked(state, key.id, REVOKED_BY_CASCADE, now) for key in state.keys.values() if not key.revoked
    ]


def _revoked(state: Assessment, key_id: uuid.UUID, reason: str, now: datetime) -> Event:
    return CandidateKeyRevoked(
        key_id=key_id, assessment_id=state.id, org_id=state.org_id, reason=reason, revoked_at=now
    )


def _require_active(state: Assessment) -> AssessmentCreated:
    if state.created is None:
        raise AssessmentNotFound(str(state.id))
    if state.deleted:
        raise AssessmentAlreadyDeleted(str(state.id))
    return state.created


# --- the candidate's side ------------------------------------------------------------------
# A candidate acts on one key. Every command first checks that the key still opens its
# assessment; what is refused there is refused with one answer (`CandidateRefused`).


def consent(
    state: Assessment, key_id: uuid.UUID, disclosure: Disclosure, offered_hash: str | None, now: datetime
) -> list[Event]:
    """Record consent to the current disclosure; nothing when the key already consented to it
    (a repeat changes nothing). `offered_hash` is the hash of the text the candidate was shown:
    any but the current one's is refused, so no consent is ever recorded to a text not shown.
    None (a client that sends no hash) consents to the current text."""
    key = candidate_key(state, key_id, now)
    if offered_hash is not None and offered_hash != disclosure.hash:
        raise DisclosureOutdated(offered_hash)
    if key.consented_to(disclosure.hash):
        return []
    return [
        CandidateConsented(
            **_of_key(key),
            disclosure_version=disclosure.version,
            disclosure_hash=disclosure.hash,
            consented_at=now,
        )
    ]


def redeem(
    state: Assessment,
    key_id: uuid.UUID,
    session_id: uuid.UUID,
    disclosure_hash: str,
    now: datetime,
    candidate_name: str | None = None,
    signing_public_key: str | None = None,
) -> list[Event]:
    """Start the key's session (a pending key that consented to the current disclosure), or
    resume it (an active key: the same session, whatever `session_id` was offered)."""
    key = candidate_key(state, key_id, now)
    if key.status_at(now) == ACTIVE:
        return [CandidateSessionResumed(**_of_key(key), session_id=key.session_id, resumed_at=now)]
    if not key.consented_to(disclosure_hash):
        raise ConsentRequired(str(key_id))
    return [
        CandidateKeyRedeemed(
            **_of_key(key),
            session_id=session_id,
            subject_id=(key.subject_id or key.id) if candidate_name else None,
            candidate_name=candidate_name,
            signing_public_key=signing_public_key,
            redeemed_at=now,
            deadline=session_deadline(state.created, key, now),
        )
    ]


def session_deadline(created: AssessmentCreated, key: CandidateKey, redeemed_at: datetime) -> datetime:
    """The time limit from the redeem, but never after the key expires; none: when it expires."""
    if created.time_limit_minutes is None:
        return key.expires_at
    return min(redeemed_at + timedelta(minutes=created.time_limit_minutes), key.expires_at)


def check_device(
    state: Assessment,
    key_id: uuid.UUID,
    session_id: uuid.UUID,
    checkpoint: str,
    fingerprint_hash: str,
    now: datetime,
) -> list[Event]:
    """A device report of an active session; `changed` compares it with the session's first."""
    key = active_session(state, key_id, session_id, now)
    first = key.first_fingerprint_hash
    return [
        CandidateDeviceChecked(
            **_of_key(key),
            session_id=session_id,
            checkpoint=checkpoint,
            fingerprint_hash=fingerprint_hash,
            changed=first is not None and first != fingerprint_hash,
            checked_at=now,
        )
    ]


def complete(state: Assessment, key_id: uuid.UUID, session_id: uuid.UUID, now: datetime) -> list[Event]:
    """Complete the session before its deadline; nothing when it already was (a repeat is
    answered as the first was). The time decided here is the one recorded, so a complete
    racing the deadline is judged by `completed_at`, never by when it was stored."""
    key = _presented_key(state, key_id)
    if key.completed_at is not None and key.session_id == session_id:
        return []
    if key.completed_at is None and key.status_at(now) == PENDING:
        raise KeyNotRedeemed(str(key_id))
    if key.session_id is None or key.session_id != session_id:
        raise CandidateRefused(str(key_id))
    if key.expired_at is not None or now >= key.ends_at:
        raise DeadlinePassed(str(key_id))
    return [CandidateKeyCompleted(**_of_key(key), session_id=session_id, completed_at=now)]


def expire(state: Assessment, now: datetime) -> list[Event]:
    """Record the expiry of every key that ended by time and is not recorded as ended, each at
    the moment it ended. Nothing for a deleted assessment: its keys are revoked (the cascade),
    never also expired. Running it again on the result decides nothing, so several expiry
    steps at once append each expiry once (the stream's version settles the race)."""
    if not state.exists:
        return []
    return [
        CandidateKeyExpired(
            **_of_key(key),
            session_id=key.session_id,
            reason=DEADLINE_PASSED if key.redeemed else KEY_EXPIRED,
            expired_at=key.ends_at,
        )
        for key in state.keys.values()
        if key.due_to_expire_at(now)
    ]


def active_session(
    state: Assessment, key_id: uuid.UUID, session_id: uuid.UUID, now: datetime
) -> CandidateKey:
    """The key of this session while the session is active; refused otherwise."""
    key = _presented_key(state, key_id)
    if key.session_id != session_id or key.status_at(now) != ACTIVE:
        raise CandidateRefused(str(key_id))
    return key


def open_key(state: Assessment, key_id: uuid.UUID, now: datetime) -> CandidateKey:
    """The key while it opens its assessment (`pending` or `active`); refused otherwise."""
    key = _presented_key(state, key_id)
    if not key.usable_at(now):
        raise CandidateRefused(str(key_id))
    return key


def candidate_key(state: Assessment, key_id: uuid.UUID, now: datetime) -> CandidateKey:
    """`open_key` for the candidate's own calls: a completed key is told so (409) rather than
    refused (401), so the client can say why."""
    key = _presented_key(state, key_id)
    if key.completed_at is not None:
        raise KeyAlreadyCompleted(str(key_id))
    return open_key(state, key_id, now)


def _presented_key(state: Assessment, key_id: uuid.UUID) -> CandidateKey:
    """A key of a live assessment that was not revoked."""
    key = state.keys.get(key_id)
    if not state.exists or key is None or key.revoked:
        raise CandidateRefused(str(key_id))
    return key


def _of_key(key: CandidateKey) -> dict:
    return {"key_id": key.id, "assessment_id": key.assessment_id, "org_id": key.org_id}
