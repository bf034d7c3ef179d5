"""The candidate's side: consent, redeem, device checks, completion, and the expiry step.

A candidate proves who they are with their key (`PST-XXXX-XXXX`) or, once their session
started, with its session token. Both are looked up through their reservations (the only place
a key string or a token's hash is kept) and then decided on the assessment's stream, read from
the store: never from a projection that may lag behind a revoke, a delete or an expiry, so
authentication fails closed. Every decision is an event appended with the version it was
decided on, so two redeems of one key at once start one session, and a redeem racing a
revoke or a delete either lands first (and is then revoked with the rest) or is refused.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events import aggregate
from events.aggregate import Assessment, CandidateRefused
from events.candidate import CandidateKey
from events.disclosure import Disclosure
from events.keys import looks_like_key
from events.model import Event, Metadata, RecordedEvent, uuid7
from events.ports import ConcurrencyConflict, Reservation
from events.service import KEY_SCOPE, AssessmentService, back_off
from events.tenancy import hash_token

SESSION_TOKEN_SCOPE = "session_token"
SESSION_TOKEN_PREFIX = "cst_"

Decide = Callable[[Assessment, datetime], list[Event]]


def new_session_token() -> str:
    """256 random bits, shown once to the candidate; only its SHA-256 is kept (like reviewer
    tokens: a fast hash is safe for a secret that cannot be guessed)."""
    return SESSION_TOKEN_PREFIX + secrets.token_urlsafe(32)


def fingerprint_hash(session_id: uuid.UUID, fingerprint: dict[str, Any]) -> str:
    """A device fingerprint as a hash salted with its session: equal fingerprints of one session
    compare equal, while the raw values (and their link to other sessions) are never kept."""
    canonical = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(session_id.bytes + canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Redemption:
    """A redeem's outcome: the assessment, the key as it is now, and the new session token."""

    state: Assessment
    key: CandidateKey
    session_token: str


@dataclass(frozen=True)
class InSession:
    """What a session token opens: its assessment, and its key (whose session is active)."""

    state: Assessment
    key: CandidateKey


class CandidateService:
    def __init__(
        self,
        assessments: AssessmentService,
        disclosure: Disclosure,
        generate_token: Callable[[], str] = new_session_token,
    ) -> None:
        self.assessments = assessments
        self.store = assessments.store
        self.disclosure = disclosure
        self.generate_token = generate_token

    def clock(self) -> datetime:
        return self.assessments.clock()

    # --- the candidate's calls, in the client's order ---------------------------------------

    def consent_status(self, key: str) -> CandidateKey:
        """The key, while it opens its assessment (the caller asks `consented_to`)."""
        stream_id, key_id = self._locate(key)
        return aggregate.candidate_key(self.assessments.load(stream_id), key_id, self.clock())

    def consent(self, key: str, disclosure_hash: str | None, correlation_id: str | None) -> CandidateKey:
        """Consent to the current disclosure (`aggregate.consent`: a hash of another text is
        refused)."""
        stream_id, key_id = self._locate(key)

        def decide(state: Assessment, now: datetime) -> list[Event]:
            return aggregate.consent(state, key_id, self.disclosure, disclosure_hash, now)

        state, _ = self._act(stream_id, key_id, decide, correlation_id)
        return state.keys[key_id]

    def redeem(
        self,
        key: str,
        correlation_id: str | None,
        candidate_name: str | None = None,
        signing_public_key: str | None = None,
    ) -> Redemption:
        """Start the key's session, or resume it; either way with a new session token, whose
        hash is reserved in the same append as the event."""
        stream_id, key_id = self._locate(key)
        token = self.generate_token()

        def decide(state: Assessment, now: datetime) -> list[Event]:
            return aggregate.redeem(
                state, key_id, uuid7(), self.disclosure.hash, now, candidate_name, signing_public_key
            )

        def token_reservation(events: Sequence[Event]) -> list[Reservation]:
            payload = {"keyId": str(key_id), "sessionId": str(events[0].session_id)}
            return [Reservation(SESSION_TOKEN_SCOPE, hash_token(token), payload)]

        state, _ = self._act(stream_id, key_id, decide, correlation_id, token_reservation)
        return Redemption(state, state.keys[key_id], token)

    def in_session(self, token: str) -> InSession:
        """What a session token opens while its session is active."""
        found = self.store.reservation(SESSION_TOKEN_SCOPE, hash_token(token))
        if found is None:
            raise CandidateRefused()
        key_id, session_id = uuid.UUID(found.payload["keyId"]), uuid.UUID(found.payload["sessionId"])
        state = self.assessments.load(found.stream_id)
        return InSession(state, aggregate.active_session(state, key_id, session_id, self.clock()))

    def check_device(
        self, session: InSession, checkpoint: str, fingerprint: dict[str, Any], correlation_id: str | None
    ) -> None:
        """Record a device report of an active session (`in_session` found it)."""
        key = session.key
        hashed = fingerprint_hash(key.session_id, fingerprint)

        def decide(state: Assessment, now: datetime) -> list[Event]:
            return aggregate.check_device(state, key.id, key.session_id, checkpoint, hashed, now)

        self._act(key.assessment_id, key.id, decide, correlation_id)

    def complete(self, key: str, session_id: uuid.UUID, correlation_id: str | None) -> datetime:
        """Complete the session; a repeat answers the first completion's time."""
        stream_id, key_id = self._locate(key)
        state, _ = self._act(
            stream_id,
            key_id,
            lambda state, now: aggregate.complete(state, key_id, session_id, now),
            correlation_id,
        )
        return state.keys[key_id].completed_at

    # --- reads -----------------------------------------------------------

    def assessment_for(self, credential: str, assessment_id: uuid.UUID) -> Assessment:
        """The assessment a candidate may read with a key (pending or active) or a session
        token (session active), and only that one."""
        if looks_like_key(credential):
            return self.assessments.authorise_candidate(credential, assessment_id)
        state = self.assessment_of(credential)
        if state.id != assessment_id:
            raise CandidateRefused()
        return state

    def assessment_of(self, credential: str) -> Assessment:
        """The assessment a key (pending or active) or a session token (session active) opens."""
        if looks_like_key(credential):
            stream_id, key_id = self._locate(credential)
            state = self.assessments.load(stream_id)
            aggregate.open_key(state, key_id, self.clock())
            return state
        if credential.startswith(SESSION_TOKEN_PREFIX):
            return self.in_session(credential).state
        raise CandidateRefused()

    # --- plumbing -------------------------------------------------------------------------------

    def _locate(self, key: str) -> tuple[uuid.UUID, uuid.UUID]:
        """The stream and id of a presented key, from its reservation; refused when unknown."""
        found = self.store.reservation(KEY_SCOPE, key) if looks_like_key(key) else None
        if found is None or found.subject_id is None:
            raise CandidateRefused()
        return found.stream_id, found.subject_id

    def _act(
        self,
        stream_id: uuid.UUID,
        key_id: uuid.UUID,
        decide: Decide,
        correlation_id: str | None,
        reservations: Callable[[Sequence[Event]], list[Reservation]] | None = None,
    ) -> tuple[Assessment, list[RecordedEvent]]:
        """Decide on the stream's current state and append, again on a lost race (the next
        attempt decides on the newer state, which may decide otherwise). Returns the state
        after the decision, which decided nothing when there was nothing to do."""
        for attempt in range(1, self.assessments.max_attempts + 1):
            try:
                with self.assessments.turns(stream_id):  # the assessment's other writers wait
                    state = self.assessments.load(stream_id)
                    events = decide(state, self.clock())
                    if not events:
                        return state, []
                    metadata = Metadata(state.org_id, f"candidate:{key_id}", correlation_id)
                    claims = reservations(events) if reservations else ()
                    recorded = self.store.append(stream_id, state.version, events, metadata, claims)
            except ConcurrencyConflict:
                back_off(attempt)
                continue
            return aggregate.advanced(state, events), recorded
        raise ConcurrencyConflict(f"{stream_id}: too many concurrent writers")
