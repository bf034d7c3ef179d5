"""Domain events: the facts the service records, as frozen dataclasses with data only.

Every event of an assessment lives in that assessment's stream. Adding an optional field (one
with a default) to an event is backward compatible: stored events without it are read with the
default. Renaming or removing one, or changing its meaning, needs a new schema version and an
upcaster in `codec.py`, and breaks the downstream consumers documented in docs/events.md:
think twice.

`AssessmentDetails` is the one definition of an assessment's own fields. `AssessmentCreated`
takes them from it, and so do the read model's row and table and the API's schemas; a guard
test (tests/unit/test_fields.py) fails when one of them does not. Adding an assessment field is
a change to this file, a migration, and the published contract's two documents.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar


def utcnow() -> datetime:
    """The current time in UTC, truncated to the millisecond precision the API promises."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


_uuid7_lock = threading.Lock()
_uuid7_last = (0, 0)  # (milliseconds, 12-bit sequence) of the previous id


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): ids sort by creation and index well. Within
    one process they are strictly increasing (a 12-bit sequence within the millisecond), so
    things created in one request keep their order."""
    global _uuid7_last
    with _uuid7_lock:
        millis, sequence = time.time_ns() // 1_000_000, 0
        last_millis, last_sequence = _uuid7_last
        if millis <= last_millis:
            millis, sequence = last_millis, last_sequence + 1
            if sequence > 0xFFF:
                millis, sequence = millis + 1, 0
        _uuid7_last = (millis, sequence)
    rand_b = int.from_bytes(os.urandom(8), "big") & (2**62 - 1)
    value = (millis & (2**48 - 1)) << 80 | 0x7 << 76 | sequence << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


@dataclass(frozen=True)
class Rules:
    """What a field may hold, for whoever checks input (the API builds its schema from these).
    Text is free of NUL; `visible` text must show at least one character."""

    max_length: int | None = None
    visible: bool = False
    minimum: int | None = None
    maximum: int | None = None
    url: bool = False


def rules(**kwargs: Any) -> dict[str, Rules]:
    """A field's metadata holding its `Rules`."""
    return {"rules": Rules(**kwargs)}


@dataclass(frozen=True, kw_only=True)
class AssessmentDetails:
    """What a reviewer writes when creating an assessment: the one definition of these fields
    (see the module's docstring). The service receives them validated."""

    title: str = field(metadata=rules(max_length=255, visible=True))
    role: str = field(metadata=rules(max_length=255, visible=True))
    task_brief: str = field(metadata=rules(max_length=50_000))
    repo_url: str | None = field(default=None, metadata=rules(max_length=2048, url=True))
    time_limit_minutes: int | None = field(default=None, metadata=rules(minimum=1, maximum=7 * 24 * 60))
    expires_in_days: int = field(default=7, metadata=rules(minimum=1, maximum=365))
    issue_id: str | None = field(default=None, metadata=rules(max_length=255, visible=True))
    rubric_id: uuid.UUID | None = None


def details_of(assessment: Any) -> dict[str, Any]:
    """The `AssessmentDetails` fields of anything that has them (an event, a row), by name."""
    return {f.name: getattr(assessment, f.name) for f in fields(AssessmentDetails)}


@dataclass(frozen=True, kw_only=True)
class _OfAnAssessment:
    assessment_id: uuid.UUID
    org_id: str


@dataclass(frozen=True)
class Event:
    """Base of all domain events. `type_name` is the stable name stored and published."""

    type_name: ClassVar[str] = ""
    schema_version: ClassVar[int] = 1
    routing_key: ClassVar[str] = ""
    #: The fields that hold personal data (`events.personal`): sealed in the store under the
    #: data key of the event's `subject_id`, never published.
    personal: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True, kw_only=True)
class AssessmentCreated(Event, AssessmentDetails, _OfAnAssessment):
    """The assessment's id and organisation, its details, and when: in that order (the field
    order of the bases, reversed), which is the order of its published `data`."""

    type_name: ClassVar[str] = "AssessmentCreated"
    routing_key: ClassVar[str] = "assessment.created"

    created_at: datetime


@dataclass(frozen=True)
class AssessmentDeleted(Event):
    type_name: ClassVar[str] = "AssessmentDeleted"
    routing_key: ClassVar[str] = "assessment.deleted"

    assessment_id: uuid.UUID
    org_id: str
    deleted_at: datetime


@dataclass(frozen=True)
class CandidateKeyIssued(Event):
    """A key was issued. Every event is published to the exchange and shown in the history, and
    the key string is a credential, so no event holds it: it is kept only in the key's
    reservation (`events.ports.Reservation`). Events carry its hint (`keys.key_hint`).

    Version 2 renamed version 1's `email` and `name` to `candidateEmail` and `candidateName`,
    the API's names; version 3 replaced version 2's `key` with `keyHint` (see
    `codec.UPCASTERS`); version 4 added `subjectId`, the data subject whose key seals the
    candidate's email and name (`events.personal`), which messages no longer carry."""

    type_name: ClassVar[str] = "CandidateKeyIssued"
    schema_version: ClassVar[int] = 4
    routing_key: ClassVar[str] = "candidate_key.issued"
    personal: ClassVar[tuple[str, ...]] = ("candidate_email", "candidate_name")

    key_id: uuid.UUID
    assessment_id: uuid.UUID
    org_id: str
    key_hint: str
    candidate_email: str | None
    candidate_name: str | None
    org_name: str | None
    expires_at: datetime
    issued_at: datetime
    subject_id: uuid.UUID | None = None


@dataclass(frozen=True)
class CandidateKeyRevoked(Event):
    """A key stops authenticating. `reason` is `revoked` (by a reviewer) or
    `assessment_deleted` (the worker's cascade)."""

    type_name: ClassVar[str] = "CandidateKeyRevoked"
    routing_key: ClassVar[str] = "candidate_key.revoked"

    key_id: uuid.UUID
    assessment_id: uuid.UUID
    org_id: str
    reason: str
    revoked_at: datetime


@dataclass(frozen=True, kw_only=True)
class _OfAKey:
    key_id: uuid.UUID
    assessment_id: uuid.UUID
    org_id: str


# --- the candidate's side: consent, a session, device checks, completion, expiry -------------
# None of these carries a credential: the session token is kept only as a hash, in its
# reservation (like a key string), and a device's fingerprint only as a salted hash.


@dataclass(frozen=True, kw_only=True)
class CandidateConsented(Event, _OfAKey):
    """The candidate accepted the disclosure of this `disclosure_version`, whose serialised text
    hashes to `disclosure_hash` (`events.disclosure`): the audit trail's proof of consent."""

    type_name: ClassVar[str] = "CandidateConsented"
    routing_key: ClassVar[str] = "candidate_key.consented"

    disclosure_version: str
    disclosure_hash: str
    consented_at: datetime


@dataclass(frozen=True, kw_only=True)
class CandidateKeyRedeemed(Event, _OfAKey):
    """A pending key became active: its session started. `deadline` is when the session ends,
    `redeemed_at` plus the time limit but never after the key's `expires_at`. The name the
    candidate gave (if any) fills the key's name where the reviewer left it empty; their
    Ed25519 public key (base64) lets later evidence be verified as theirs. Version 2 added
    `subjectId`, whose data key seals that name (`events.personal`)."""

    type_name: ClassVar[str] = "CandidateKeyRedeemed"
    schema_version: ClassVar[int] = 2
    routing_key: ClassVar[str] = "candidate_key.redeemed"
    personal: ClassVar[tuple[str, ...]] = ("candidate_name",)

    session_id: uuid.UUID
    subject_id: uuid.UUID | None = None
    candidate_name: str | None = None
    signing_public_key: str | None = None
    redeemed_at: datetime
    deadline: datetime


@dataclass(frozen=True, kw_only=True)
class CandidateSessionResumed(Event, _OfAKey):
    """An active key was redeemed again (another terminal, a lost token): the same session, and
    one more session token for it. A signal for reviewers, too."""

    type_name: ClassVar[str] = "CandidateSessionResumed"
    routing_key: ClassVar[str] = "candidate_key.session_resumed"

    session_id: uuid.UUID
    resumed_at: datetime


@dataclass(frozen=True, kw_only=True)
class CandidateDeviceChecked(Event, _OfAKey):
    """The candidate's client reported its device at a checkpoint. `fingerprint_hash` is salted
    with the session id (the raw values never leave the request; the same device cannot be
    linked across sessions by it); `changed` says whether it differs from the session's first."""

    type_name: ClassVar[str] = "CandidateDeviceChecked"
    routing_key: ClassVar[str] = "candidate_key.device_checked"

    session_id: uuid.UUID
    checkpoint: str
    fingerprint_hash: str
    changed: bool
    checked_at: datetime


@dataclass(frozen=True, kw_only=True)
class CandidateKeyCompleted(Event, _OfAKey):
    """The candidate finished before the session's deadline: `completed_at` is the decision's
    time, always before it."""

    type_name: ClassVar[str] = "CandidateKeyCompleted"
    routing_key: ClassVar[str] = "candidate_key.completed"

    session_id: uuid.UUID
    completed_at: datetime


KEY_EXPIRED = "key_expired"
DEADLINE_PASSED = "deadline_passed"


@dataclass(frozen=True, kw_only=True)
class CandidateKeyExpired(Event, _OfAKey):
    """A key ran out of time: `reason` is `key_expired` (pending past its `expires_at`) or
    `deadline_passed` (active past its session's deadline). `expired_at` is that moment, not
    when the expiry step noticed it."""

    type_name: ClassVar[str] = "CandidateKeyExpired"
    routing_key: ClassVar[str] = "candidate_key.expired"

    session_id: uuid.UUID | None = None
    reason: str
    expired_at: datetime


# --- erasure: one stream per data subject ------------------------------------------------------


ERASED_ON_REQUEST = "request"
ERASED_BY_RETENTION = "retention"


@dataclass(frozen=True, kw_only=True)
class CandidateErased(Event):
    """The data key of a candidate (a data subject, `events.personal`) was destroyed: every
    personal field sealed under it, in every event and copy, is unreadable from now on.
    Consumers holding copies of what they read for the keys whose `CandidateKeyIssued` named
    this `subject_id` drop them. `reason` is `request` (a reviewer or an operator) or
    `retention` (the retention period passed). The only event of its subject's stream, so an
    erasure happens once."""

    type_name: ClassVar[str] = "CandidateErased"
    routing_key: ClassVar[str] = "candidate.erased"

    subject_id: uuid.UUID
    org_id: str
    reason: str
    erased_at: datetime


# --- webhook endpoints: one stream per endpoint ----------------------------------------------
# The signing secret is a credential: no event holds it. Each secret version is kept only in a
# reservation (scope `webhook_secret`, subject id = `secret_id`), written in the same append.


@dataclass(frozen=True, kw_only=True)
class _OfAnEndpoint:
    endpoint_id: uuid.UUID
    org_id: str


@dataclass(frozen=True, kw_only=True)
class WebhookEndpointRegistered(Event, _OfAnEndpoint):
    """An organisation registered an endpoint: deliveries of the events whose type matches one
    of `events` (types or routing-key patterns) start with the events after this one.
    `secret_id` names the first signing secret's version (its reservation), never the secret."""

    type_name: ClassVar[str] = "WebhookEndpointRegistered"
    routing_key: ClassVar[str] = "webhook_endpoint.registered"

    url: str
    events: tuple[str, ...]
    description: str | None = None
    secret_id: uuid.UUID
    registered_at: datetime


@dataclass(frozen=True, kw_only=True)
class WebhookSecretRotated(Event, _OfAnEndpoint):
    """A new signing secret (version `secret_id`) replaced the previous one, which still signs
    alongside it until `previous_valid_until`."""

    type_name: ClassVar[str] = "WebhookSecretRotated"
    routing_key: ClassVar[str] = "webhook_endpoint.secret_rotated"

    secret_id: uuid.UUID
    previous_valid_until: datetime
    rotated_at: datetime


@dataclass(frozen=True, kw_only=True)
class WebhookEndpointRemoved(Event, _OfAnEndpoint):
    type_name: ClassVar[str] = "WebhookEndpointRemoved"
    routing_key: ClassVar[str] = "webhook_endpoint.removed"

    removed_at: datetime


@dataclass(frozen=True, kw_only=True)
class WebhookEndpointDisabled(Event, _OfAnEndpoint):
    """The dispatcher stopped delivering to the endpoint after `failures` consecutive failed
    attempts (`reason`: `consecutive_failures`)."""

    type_name: ClassVar[str] = "WebhookEndpointDisabled"
    routing_key: ClassVar[str] = "webhook_endpoint.disabled"

    reason: str
    failures: int
    disabled_at: datetime


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type_name: cls
    for cls in (
        AssessmentCreated,
        AssessmentDeleted,
        CandidateKeyIssued,
        CandidateKeyRevoked,
        CandidateConsented,
        CandidateKeyRedeemed,
        CandidateSessionResumed,
        CandidateDeviceChecked,
        CandidateKeyCompleted,
        CandidateKeyExpired,
        CandidateErased,
        WebhookEndpointRegistered,
        WebhookSecretRotated,
        WebhookEndpointRemoved,
        WebhookEndpointDisabled,
    )
}


@dataclass(frozen=True)
class Metadata:
    """Who and what caused an event; stored beside it and carried in the published message."""

    org_id: str
    actor: str
    correlation_id: str | None = None
    causation_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "orgId": self.org_id,
            "actor": self.actor,
            "correlationId": self.correlation_id,
            "causationId": self.causation_id,
        }


@dataclass(frozen=True)
class RecordedEvent:
    """An event as the store holds it: the fact plus where it sits in its stream and globally."""

    event_id: uuid.UUID
    stream_id: uuid.UUID
    stream_version: int
    position: int
    recorded_at: datetime
    event: Event
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def type_name(self) -> str:
        return self.event.type_name


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as its row holds it, `data` not decoded into its dataclass: everything the
    relay needs to publish it (see `messages.encode_stored`), for a fraction of the cost."""

    position: int
    event_id: uuid.UUID
    stream_id: uuid.UUID
    stream_version: int
    type_name: str
    schema_version: int
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime
