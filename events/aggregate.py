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

from events.keys import key_hint
from events.model import (
    AssessmentCreated,
    AssessmentDeleted,
    AssessmentDetails,
    CandidateKeyIssued,
    CandidateKeyRevoked,
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


PENDING, ACTIVE, COMPLETED, EXPIRED = "pending", "active", "completed", "expired"


@dataclass(frozen=True)
class CandidateKey:
    """A candidate key as its events describe it: what the aggregate decides on, and the row
    the keys projection keeps (`projections.candidate_keys`). Known by id, never by its string,
    which only its reservation holds; the service finds a presented key's id through it."""

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

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def usable_at(self, now: datetime) -> bool:
        return not self.revoked and now < self.expires_at

    def status_at(self, now: datetime) -> str:
        """`expired` is derived, not an event: a key simply stops being usable in time."""
        if self.completed_at is not None:
            return COMPLETED
        if now >= self.expires_at:
            return EXPIRED
        return ACTIVE if self.redeemed_at is not None else PENDING


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
    )


def revoked_key(key: CandidateKey, event: CandidateKeyRevoked) -> CandidateKey:
    return replace(key, revoked_at=event.revoked_at, revoke_reason=event.reason)


@dataclass(frozen=True)
class NewKey:
    """A key the caller generated (and reserved) and wants issued. Its string goes into the
    reservation, never into the event: the event gets its hint."""

    key_id: uuid.UUID
    key: str
    candidate_email: str | None = None
    candidate_name: str | None = None


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


# --- state is a fold --------------------------------------------------------------------


def rebuild(stream_id: uuid.UUID, events: Iterable[Event]) -> Assessment:
    state = Assessment(id=stream_id)
    for event in events:
        state = replace(evolve(event, state), version=state.version + 1)
    return state


# One case per event type, registered by name rather than by decorator: plain functions that
# mutation testing reaches too (mutmut leaves decorated functions alone).


def _no_rule(event: Event, state: Assessment) -> Assessment:
    raise TypeError(f"Assessment has no rule for {type(event).__name__}")


def _created(event: AssessmentCreated, state: Assessment) -> Assessment:
    return replace(state, created=event)


def _deleted(event: AssessmentDeleted, state: Assessment) -> Assessment:
    return replace(state, deleted=True)


def _key_issued(event: CandidateKeyIssued, state: Assessment) -> Assessment:
    return replace(state, keys=MappingProxyType({**state.keys, event.key_id: issued_key(event)}))


def _key_revoked(event: CandidateKeyRevoked, state: Assessment) -> Assessment:
    revoked = revoked_key(state.keys[event.key_id], event)
    return replace(state, keys=MappingProxyType({**state.keys, event.key_id: revoked}))


#: The state after one event: `evolve(event, state)`.
evolve = singledispatch(_no_rule)
evolve.register(AssessmentCreated, _created)
evolve.register(AssessmentDeleted, _deleted)
evolve.register(CandidateKeyIssued, _key_issued)
evolve.register(CandidateKeyRevoked, _key_revoked)


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
