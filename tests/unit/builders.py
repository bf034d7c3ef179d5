"""Sample events for unit tests: valid by default, any field overridable, random ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from events.model import (
    AssessmentCreated,
    AssessmentDeleted,
    CandidateKeyIssued,
    CandidateKeyRevoked,
    Event,
    RecordedEvent,
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


def one_of_each() -> list[Event]:
    """A stream holding every event type, in a valid order."""
    first = created()
    key = issued(first)
    return [first, key, revoked(key), deleted(first)]


def recorded(
    event: Event, stream_version: int, position: int | None = None, **metadata: Any
) -> RecordedEvent:
    """`event` as the store would hold it, in its assessment's stream."""
    return RecordedEvent(
        event_id=uuid.uuid4(),
        stream_id=event.assessment_id,  # type: ignore[attr-defined]
        stream_version=stream_version,
        position=stream_version if position is None else position,
        recorded_at=NOW,
        event=event,
        metadata=metadata,
    )
