"""Command handlers: load an assessment's stream, let the aggregate decide, append the result.

The API and the worker's cascade both go through here, so every rule lives here or in the
aggregate (the issue's brief wins over one sent, a retried create with the same
`Idempotency-Key` creates nothing new, a candidate key must be usable in the stream itself),
and every write takes the same optimistic-concurrency path.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime

from events import aggregate, keys
from events.aggregate import (
    Assessment,
    AssessmentDetails,
    AssessmentNotFound,
    CandidateRefused,
    DomainError,
    NewKey,
)
from events.keys import KeyGenerator
from events.model import AssessmentCreated, Event, Metadata, RecordedEvent, utcnow, uuid7
from events.personal import PersonalData
from events.ports import (
    Catalogue,
    ConcurrencyConflict,
    EventStore,
    Issue,
    Reservation,
    ReservationTaken,
)

Decision = Callable[[Assessment, datetime], list[Event]]

KEY_SCOPE = "candidate_key"
EXPIRY_ACTOR = "worker:expiry"

log = logging.getLogger(__name__)


class StreamTurns:
    """Writers of one stream take turns: each attempt (load, decide, append) holds the lock of
    the stream's stripe. Optimistic concurrency alone makes N writers of one stream at once
    lose up to N-1 races each, and with seven (on two cores) some lost all their attempts and
    answered 409. The locks are a process's own: writers in other processes still race, and
    the append's version check still decides. Re-entrant, in case a decision ever writes
    another stream of the same stripe."""

    def __init__(self, stripes: int = 256) -> None:
        self._locks = tuple(threading.RLock() for _ in range(stripes))

    def __call__(self, stream_id: uuid.UUID) -> threading.RLock:
        return self._locks[stream_id.int % len(self._locks)]


#: The turns every service of this process shares (tests that stand for several processes
#: give each its own).
PROCESS_TURNS = StreamTurns()
#: What a service takes turns with: the lock for a stream (`StreamTurns`, or any context
#: manager, e.g. none at all for racers that stand for separate processes).
Turns = Callable[[uuid.UUID], AbstractContextManager]


class UnknownIssue(DomainError):
    """An `issueId` that is not in the catalogue."""


class IdempotencyKeyReused(DomainError):
    """An `Idempotency-Key` already used for a different request."""


@dataclass(frozen=True)
class Idempotency:
    """What makes a retried create recognisable: its key, and a fingerprint of what it asked
    for (the same key with another fingerprint is a different request)."""

    key: str
    fingerprint: str


@dataclass(frozen=True)
class Created:
    """The assessment's creation as stored, and whether an earlier request with the same
    `Idempotency-Key` made it (the caller answers the same as it did then)."""

    recorded: RecordedEvent
    replayed: bool = False

    @property
    def event(self) -> AssessmentCreated:
        return self.recorded.event


class _EmptyCatalogue:
    """For a service that never creates from an issue (the worker's cascade)."""

    def issue(self, issue_id: str) -> Issue | None:
        return None

    def issues(self) -> list[Issue]:
        return []


class KeySpaceExhausted(Exception):
    """Every attempt to draw unused candidate keys collided: something is badly wrong."""


class AssessmentService:
    def __init__(
        self,
        store: EventStore,
        catalogue: Catalogue | None = None,
        clock: Callable[[], datetime] = utcnow,
        generate_key: KeyGenerator = keys.generate_key,
        max_attempts: int = 8,
        personal: PersonalData | None = None,
        turns: Turns = PROCESS_TURNS,
    ) -> None:
        self.store = store
        self.catalogue = catalogue or _EmptyCatalogue()
        #: Without it (the pure tests) keys get no subject and their events hold clear values.
        self.personal = personal
        self.clock = clock
        self.generate_key = generate_key
        self.max_attempts = max_attempts
        self.turns = turns

    def load(self, assessment_id: uuid.UUID) -> Assessment:
        """The assessment's state; none for a stream that is not an assessment's (a webhook
        endpoint's), whose id a caller may well present here."""
        recorded = self._assessment_stream(assessment_id)
        return aggregate.rebuild(assessment_id, (r.event for r in recorded))

    def _assessment_stream(self, stream_id: uuid.UUID) -> list[RecordedEvent]:
        recorded = self.store.load(stream_id)
        return recorded if recorded and isinstance(recorded[0].event, AssessmentCreated) else []

    def load_owned(self, org_id: str, assessment_id: uuid.UUID) -> Assessment:
        """The live state of an organisation's assessment; another org's is `not found`."""
        state = self.load(assessment_id)
        if not state.owned_by(org_id):
            raise AssessmentNotFound(str(assessment_id))
        return state

    def history(self, org_id: str, assessment_id: uuid.UUID) -> list[RecordedEvent]:
        """The stream as recorded, for its organisation only, deleted or not (an audit trail)."""
        recorded = self._assessment_stream(assessment_id)
        if not recorded or recorded[0].metadata.get("orgId") != org_id:
            raise AssessmentNotFound(str(assessment_id))
        return recorded

    def authorise_candidate(self, key: str, assessment_id: uuid.UUID) -> Assessment:
        """Fail closed: the key must be usable in the stream's current state, read from the
        store, not from a projection that may lag behind a revoke or a delete. The key's
        reservation, the only place its string is kept, says which key of which stream it is."""
        reservation = self.store.reservation(KEY_SCOPE, key)
        if reservation is None or reservation.stream_id != assessment_id or reservation.subject_id is None:
            raise CandidateRefused()
        state = self.load(assessment_id)
        issued = state.keys.get(reservation.subject_id)
        if not state.exists or issued is None or not issued.usable_at(self.clock()):
            raise CandidateRefused()
        return state

    def key_strings(self, key_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """The strings of these keys, by key id, from their reservations: no event holds them."""
        return self.store.reserved_values(KEY_SCOPE, key_ids)

    def create(
        self,
        org_id: str,
        details: AssessmentDetails,
        metadata: Metadata,
        idempotency: Idempotency | None = None,
    ) -> Created:
        """Create an assessment; with `idempotency`, a retry of an earlier create (same key,
        same fingerprint) creates nothing and returns the first one."""
        if idempotency is not None and (earlier := self._created_with(org_id, idempotency)):
            return earlier
        state = Assessment(id=uuid7())
        events = aggregate.create(state, org_id, self._with_issue_brief(details), self.clock())
        claims = [_claim(org_id, idempotency)] if idempotency else []
        try:
            return Created(self.store.append(state.id, 0, events, metadata, claims)[0])
        except ReservationTaken:
            if idempotency is None:
                raise
            return self._created_with(org_id, idempotency)  # a concurrent retry got there first

    def _created_with(self, org_id: str, idempotency: Idempotency) -> Created | None:
        claimed = self.store.reservation(_idempotency_scope(org_id), idempotency.key)
        if claimed is None:
            return None
        if claimed.payload.get("fingerprint") != idempotency.fingerprint:
            raise IdempotencyKeyReused(idempotency.key)
        return Created(self.store.load(claimed.stream_id)[0], replayed=True)

    def _with_issue_brief(self, details: AssessmentDetails) -> AssessmentDetails:
        """An assessment of a catalogue issue takes the issue's brief, whatever brief was sent."""
        if details.issue_id is None:
            return details
        issue = self.catalogue.issue(details.issue_id)
        if issue is None:
            raise UnknownIssue(details.issue_id)
        return replace(details, task_brief=issue.task_brief)

    def delete(self, org_id: str, assessment_id: uuid.UUID, metadata: Metadata) -> list[RecordedEvent]:
        """Exactly one of several concurrent deletes wins; the losers reload, find it
        deleted and get `AssessmentNotFound`."""
        return self._decide_and_append(
            org_id, assessment_id, metadata, lambda state, now: aggregate.delete(state, now)
        )

    def issue_keys(
        self,
        org_id: str,
        assessment_id: uuid.UUID,
        candidates: Sequence[tuple[str | None, str | None]],
        metadata: Metadata,
        org_name: str | None = None,
    ) -> list[RecordedEvent]:
        """Issue one key per (email, name) pair. Key strings are reserved service-wide in the
        append's transaction (each reservation naming its key's id, and the only place the
        string is kept: see `key_strings`); on a collision the whole batch is drawn again."""
        for _ in range(self.max_attempts):
            keys = [self._new_key(uuid7(), email, name) for email, name in candidates]
            try:
                return self._decide_and_append(
                    org_id,
                    assessment_id,
                    metadata,
                    lambda state, now, keys=keys: aggregate.issue_keys(state, keys, now, org_name),
                    [Reservation(KEY_SCOPE, key.key, subject_id=key.key_id) for key in keys],
                )
            except ReservationTaken as taken:
                log.warning("candidate key collision on %s; drawing new keys", taken.key[:4])
        raise KeySpaceExhausted("could not draw unique candidate keys")

    def _new_key(self, key_id: uuid.UUID, email: str | None, name: str | None) -> NewKey:
        """A key is its own data subject (`events.personal`), whose data key the store makes
        with the key's issue; without `personal` (the pure tests) nothing is sealed."""
        return NewKey(key_id, self.generate_key(), email, name, key_id if self.personal else None)

    def revoke_key(
        self, org_id: str, assessment_id: uuid.UUID, key_id: uuid.UUID, metadata: Metadata
    ) -> list[RecordedEvent]:
        return self._decide_and_append(
            org_id,
            assessment_id,
            metadata,
            lambda state, now: aggregate.revoke_key(state, key_id, now),
        )

    def cascade_deletion(self, assessment_id: uuid.UUID, metadata: Metadata) -> list[RecordedEvent]:
        """Revoke every key of a deleted assessment that is not revoked yet. Idempotent: on a
        second run the aggregate decides nothing and nothing is appended."""
        return self._until_settled(assessment_id, aggregate.revoke_keys_of_deleted, lambda _state: metadata)

    def expire_keys(self, assessment_id: uuid.UUID) -> list[RecordedEvent]:
        """Record the expiry of the stream's keys that ran out of time (the worker's expiry
        step). Idempotent like the cascade, so several steps at once append each expiry once."""
        return self._until_settled(
            assessment_id, aggregate.expire, lambda state: Metadata(state.org_id, EXPIRY_ACTOR)
        )

    def _until_settled(
        self, assessment_id: uuid.UUID, decide: Decision, metadata: Callable[[Assessment], Metadata]
    ) -> list[RecordedEvent]:
        """The worker's own decisions, whoever owns the stream: on a lost race the next attempt
        reloads, finds the work done (by the winner) and decides nothing."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                with self.turns(assessment_id):
                    state = self.load(assessment_id)
                    events = decide(state, self.clock())
                    if not events:
                        return []
                    return self.store.append(assessment_id, state.version, events, metadata(state))
            except ConcurrencyConflict:
                back_off(attempt)
        raise ConcurrencyConflict(f"{assessment_id}: kept losing races")

    def _decide_and_append(
        self,
        org_id: str,
        assessment_id: uuid.UUID,
        metadata: Metadata,
        decide: Decision,
        reservations: Sequence[Reservation] = (),
    ) -> list[RecordedEvent]:
        """Retry on a lost race: the next attempt decides on the newer state, which may
        refuse (e.g. the assessment was deleted meanwhile)."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                with self.turns(assessment_id):
                    state = self.load_owned(org_id, assessment_id)
                    events = decide(state, self.clock())
                    return self.store.append(assessment_id, state.version, events, metadata, reservations)
            except ConcurrencyConflict:
                back_off(attempt)
        raise ConcurrencyConflict(f"{assessment_id}: too many concurrent writers")


def _idempotency_scope(org_id: str) -> str:
    return f"idempotency:{org_id}:create-assessment"


def _claim(org_id: str, idempotency: Idempotency) -> Reservation:
    return Reservation(_idempotency_scope(org_id), idempotency.key, {"fingerprint": idempotency.fingerprint})


def back_off(attempt: int) -> None:
    """A short random pause after a lost race, so the losers do not collide again in step."""
    time.sleep(random.uniform(0, 0.002 * 2**attempt))
