"""Sample events for unit tests: valid by default, any field overridable, random ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from events.model import (
    AssessmentCreated,
    AssessmentDeleted,
    CandidateConsented,
    CandidateDeviceChecked,
    CandidateErased,
    CandidateKeyCompleted,
    CandidateKeyExpired,
    CandidateKeyIssued,
    CandidateKeyRedeemed,
    CandidateKeyRevoked,
    CandidateSessionResumed,
    Event,
    RecordedEvent,
    WebhookEndpointDisabled,
    WebhookEndpointRegistered,
    WebhookEndpointRemoved,
    WebhookSecretRotated,
)

NOW = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


def created(**overrides: Any) -> AssessmentCreated:
    fields: dict[str, Any] = {
        "assessment_id": uuid.uuid4(),
        "org_id": f"org-{uuid.uuid4().hex[:8]}",
        "title": "Backend take-home",
        "role": "Senior Backend Engineer",
        "task_brief": "Fix the bug.",
        "repo_url": "https://github.com/example/repo",
        "time_limit_minutes": 90,
        "expires_in_days": 7,
        "issue_id": "flask-5628-env-file-precedence",
        "rubric_id": uuid.uuid4(),
        "created_at": NOW,
    }
    return AssessmentCreated(**{**fields, **overrides})


def deleted(of: AssessmentCreated, at: datetime = NOW + timedelta(hours=1)) -> AssessmentDeleted:
    return AssessmentDeleted(assessment_id=of.assessment_id, org_id=of.org_id, deleted_at=at)


def issued(of: AssessmentCreated, **overrides: Any) -> CandidateKeyIssued:
    fields: dict[str, Any] = {
        "key_id": uuid.uuid4(),
        "assessment_id": of.assessment_id,
        "org_id": of.org_id,
        "key_hint": "PST-****-**GH",
        "candidate_email": "ada@example.com",
        "candidate_name": "Ada",
        "org_name": "Acme",
        "expires_at": NOW + timedelta(days=of.expires_in_days),
        "issued_at": NOW,
    }
    return CandidateKeyIssued(**{**fields, **overrides})


def revoked(key: CandidateKeyIssued, reason: str = "revoked", at: datetime = NOW) -> CandidateKeyRevoked:
    return CandidateKeyRevoked(
        key_id=key.key_id, assessment_id=key.assessment_id, org_id=key.org_id, reason=reason, revoked_at=at
    )


def _of(key: CandidateKeyIssued) -> dict[str, Any]:
    return {"key_id": key.key_id, "assessment_id": key.assessment_id, "org_id": key.org_id}


def consented(key: CandidateKeyIssued, at: datetime = NOW, **overrides: Any) -> CandidateConsented:
    fields = {"disclosure_version": "2026-12-01", "disclosure_hash": "ab" * 32, "consented_at": at}
    return CandidateConsented(**_of(key), **{**fields, **overrides})


def redeemed(key: CandidateKeyIssued, at: datetime = NOW, **overrides: Any) -> CandidateKeyRedeemed:
    fields: dict[str, Any] = {
        "session_id": uuid.uuid4(),
        "candidate_name": "Ada L.",
        "signing_public_key": "A" * 43 + "=",
        "redeemed_at": at,
        "deadline": at + timedelta(minutes=90),
    }
    return CandidateKeyRedeemed(**_of(key), **{**fields, **overrides})


def resumed(started: CandidateKeyRedeemed, at: datetime = NOW) -> CandidateSessionResumed:
    return CandidateSessionResumed(
        key_id=started.key_id,
        assessment_id=started.assessment_id,
        org_id=started.org_id,
        session_id=started.session_id,
        resumed_at=at,
    )


def device_checked(started: CandidateKeyRedeemed, **overrides: Any) -> CandidateDeviceChecked:
    fields: dict[str, Any] = {
        "checkpoint": "start",
        "fingerprint_hash": "cd" * 32,
        "changed": False,
        "checked_at": started.redeemed_at,
    }
    return CandidateDeviceChecked(
        key_id=started.key_id,
        assessment_id=started.assessment_id,
        org_id=started.org_id,
        session_id=started.session_id,
        **{**fields, **overrides},
    )


def completed(started: CandidateKeyRedeemed, at: datetime | None = None) -> CandidateKeyCompleted:
    return CandidateKeyCompleted(
        key_id=started.key_id,
        assessment_id=started.assessment_id,
        org_id=started.org_id,
        session_id=started.session_id,
        completed_at=at or started.redeemed_at + timedelta(minutes=30),
    )


def expired(key: CandidateKeyIssued, **overrides: Any) -> CandidateKeyExpired:
    fields: dict[str, Any] = {"session_id": None, "reason": "key_expired", "expired_at": key.expires_at}
    return CandidateKeyExpired(**_of(key), **{**fields, **overrides})


def one_of_each() -> list[Event]:
    """A stream holding every event type, in a valid order."""
    first = created()
    taken, lapsed, withdrawn = issued(first), issued(first), issued(first)
    started = redeemed(taken)
    return [
        first,
        taken,
        consented(taken),
        started,
        resumed(started),
        device_checked(started),
        completed(started),
        lapsed,
        expired(lapsed),
        withdrawn,
        revoked(withdrawn),
        deleted(first),
    ]


def candidate_erased(org_id: str = "org-erasure") -> CandidateErased:
    """The only event of a data subject's stream."""
    return CandidateErased(subject_id=uuid.uuid4(), org_id=org_id, reason="request", erased_at=NOW)


def webhook_endpoint_events(org_id: str = "org-webhooks") -> list[Event]:
    """An endpoint's stream holding each of its event types, in a valid order."""
    endpoint_id = uuid.uuid4()
    return [
        WebhookEndpointRegistered(
            endpoint_id=endpoint_id,
            org_id=org_id,
            url="https://hooks.example.com/assessments",
            events=("assessment.*", "CandidateKeyIssued"),
            description="ATS",
            secret_id=uuid.uuid4(),
            registered_at=NOW,
        ),
        WebhookSecretRotated(
            endpoint_id=endpoint_id,
            org_id=org_id,
            secret_id=uuid.uuid4(),
            previous_valid_until=NOW + timedelta(hours=24),
            rotated_at=NOW,
        ),
        WebhookEndpointDisabled(
            endpoint_id=endpoint_id,
            org_id=org_id,
            reason="consecutive_failures",
            failures=20,
            disabled_at=NOW,
        ),
        WebhookEndpointRemoved(endpoint_id=endpoint_id, org_id=org_id, removed_at=NOW),
    ]


_STREAM_IDS = ("assessment_id", "endpoint_id", "subject_id")


def recorded(
    event: Event, stream_version: int, position: int | None = None, **metadata: Any
) -> RecordedEvent:
    """`event` as the store would hold it, in its stream (its assessment's, endpoint's or
    data subject's)."""
    stream_id = next(getattr(event, name) for name in _STREAM_IDS if hasattr(event, name))
    return RecordedEvent(
        event_id=uuid.uuid4(),
        stream_id=stream_id,
        stream_version=stream_version,
        position=stream_version if position is None else position,
        recorded_at=NOW,
        event=event,
        metadata=metadata,
    )
